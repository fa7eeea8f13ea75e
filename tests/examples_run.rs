//! The quickstart example runs as part of the test suite.

#[path = "../examples/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;

#[test]
fn quickstart_example_runs() {
    quickstart::run(None).unwrap();
}
