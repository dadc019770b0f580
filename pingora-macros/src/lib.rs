//! Procedural macros of pingora-dsl.
//!
//! This crate will hold the `proxy!` macro (parse -> validated model -> expansion through
//! `::pingora_dsl::__private`). It exports nothing yet: until the macro lands, proxies are
//! written by hand with the runtime API that the expansion will wire.
