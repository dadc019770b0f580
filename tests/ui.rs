//! The `proxy!` language's compile-time checks: every `ui-tests/fail/*.rs` must fail to
//! compile with exactly the errors in its `.stderr` (each pointing at the offending
//! token), and every `ui-tests/pass/*.rs` must compile and run. Regenerate the expected
//! output after an intended change with `TRYBUILD=overwrite cargo test --test ui`.
//!
//! `ui-tests/fail-rustc/` holds the mistakes only the type checker finds (a value that is
//! not a layer, a phase function of the wrong shape): their messages are ours, but rustc
//! lays them out and adds notes of its own, which change between compiler releases. They
//! were recorded with the compiler in `ui-tests/fail-rustc/RUSTC_VERSION`; another
//! compiler gets a clear failure saying how to regenerate them, never a silent pass.

#[test]
fn proxy_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui-tests/pass/*.rs");
    cases.compile_fail("ui-tests/fail/*.rs");
    compiler_diagnostics(&cases);
}

/// The type checker's cases, with the compiler they were recorded with.
fn compiler_diagnostics(cases: &trybuild::TestCases) {
    let recorded = std::fs::read_to_string("ui-tests/fail-rustc/RUSTC_VERSION")
        .expect("ui-tests/fail-rustc/RUSTC_VERSION");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = std::process::Command::new(rustc)
        .arg("-V")
        .output()
        .expect("rustc -V runs");
    let running = String::from_utf8_lossy(&output.stdout);
    // `rustc 1.95.0 (59807616e 2026-04-14)`: the release is what lays messages out.
    let release = |v: &str| v.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let overwrite = std::env::var_os("TRYBUILD").is_some_and(|v| v == "overwrite");
    if overwrite {
        std::fs::write(
            "ui-tests/fail-rustc/RUSTC_VERSION",
            release(&running) + "\n",
        )
        .expect("record the compiler");
    } else {
        assert_eq!(
            release(&running),
            release(&recorded),
            "ui-tests/fail-rustc/*.stderr were recorded with {}, and this is {}: rustc's own \
             layout and notes differ between releases. Regenerate them with \
             `TRYBUILD=overwrite cargo test --test ui` and check that each still shows the \
             message pointing at the user's token",
            recorded.trim(),
            running.trim()
        );
    }
    cases.compile_fail("ui-tests/fail-rustc/*.rs");
}
