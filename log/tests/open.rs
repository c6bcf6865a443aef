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

/// A power cut during the first start used to leave a file that never opened: an
/// empty one, or one with a zeroed header. Such a file holds nothing, and opening
/// makes a new store in its place; a half-made new file is ignored.
#[test]
fn a_first_start_cut_short_leaves_a_directory_that_opens() {
    for leftover in [vec![], vec![0u8; 1 << 20]] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("sluice.redb"), &leftover).unwrap();
        std::fs::write(tmp.path().join("sluice.redb.new"), b"half a header").unwrap();
        let log = open(tmp.path());
        let topic = log
            .create_topic_blocking("t", sluice_log::TopicConfig::default())
            .expect("the store works");
        assert_eq!(topic.name(), "t");
        let epoch = log.epoch().to_string();
        drop(log);
        let log = open(tmp.path());
        assert_eq!(log.epoch(), epoch, "the new store is kept");
        assert!(log.topic("t").is_some());
        assert!(!tmp.path().join("sluice.redb.new").exists());
    }
}

/// A file with data is never taken for a fresh one: a header that does not
/// decode is an error, not a silent reset.
#[test]
fn a_damaged_store_is_refused_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; 8192];
    bytes[5000] = 1;
    std::fs::write(tmp.path().join("sluice.redb"), &bytes).unwrap();
    assert!(Log::open(tmp.path(), LogOptions::default()).is_err());
    assert_eq!(
        std::fs::read(tmp.path().join("sluice.redb")).unwrap(),
        bytes
    );
}
