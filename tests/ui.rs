//! The `proxy!` language's compile-time checks: every `ui-tests/fail/*.rs` must fail to
//! compile with exactly the errors in its `.stderr` (each pointing at the offending
//! token), and every `ui-tests/pass/*.rs` must compile and run. Regenerate the expected
//! output after an intended change with `TRYBUILD=overwrite cargo test --test ui`.

#[test]
fn proxy_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("ui-tests/pass/*.rs");
    cases.compile_fail("ui-tests/fail/*.rs");
}
