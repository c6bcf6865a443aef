//! What opening a data directory must get right: state that has to survive every
//! restart, and directories left behind by a start that was cut short.

use sluice_log::{Log, LogOptions};

fn open(dir: &std::path::Path) -> Log {
    Log::open(dir, LogOptions::default()).expect("open")
}

#[test]
fn fencing_tokens_are_never_handed_out_twice_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut blocks = Vec::new();
    for _ in 0..3 {
        let log = open(tmp.path());
        blocks.push(log.reserve_fencing_tokens().unwrap());
        blocks.push(log.reserve_fencing_tokens().unwrap());
        drop(log);
    }
    assert!(blocks.iter().all(|b| !b.is_empty() && b.start >= 1));
    for pair in blocks.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "blocks overlap or go back: {blocks:?}"
        );
    }
}
