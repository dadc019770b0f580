//! Layer 4: proxies that relay connections (TCP, optionally TLS-terminated) or datagrams
//! (UDP) to the peers of one upstream group, and the byte relay they (and HTTP tunnels)
//! use.

pub mod relay;
pub mod tcp;
pub mod udp;
