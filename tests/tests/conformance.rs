//! The storage seam's conformance suite (`sluice_tests::conformance`) on every
//! engine: one test per check, so a failure names the check and the engine.

use std::sync::Arc;

use sluice_log::{Backend, Log, LogOptions};
use sluice_tests::conformance::{CHECKS, Engine};

/// The embedded redb log in a fresh directory, with retention checked often.
fn embedded() -> Engine {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogOptions {
        maintenance_interval: std::time::Duration::from_millis(20),
        ..LogOptions::default()
    };
    let log: Arc<dyn Backend> = Arc::new(Log::open(dir.path(), options).expect("open the log"));
    (log, Box::new(dir))
}

fn run(name: &str, open: fn() -> Engine) {
    let (_, check) = CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no check {name}"));
    let (engine, _keep) = open();
    check(&engine);
}

macro_rules! engine_checks {
    ($engine:ident: $($check:ident),* $(,)?) => {
        mod $engine {
            $(
                #[test]
                fn $check() {
                    super::run(stringify!($check), super::$engine);
                }
            )*

            /// Every check of the suite has a test here.
            #[test]
            fn covers_the_whole_suite() {
                let here = [$(stringify!($check)),*];
                for (name, _) in sluice_tests::conformance::CHECKS {
                    assert!(here.contains(name), "{name} is not run on this engine");
                }
            }
        }
    };
}

engine_checks!(embedded:
    dense_offsets_in_request_order,
    reads_honour_their_limits,
    reads_outside_the_range_are_refused,
    a_dedupe_key_is_written_once,
    placement_is_murmur2,
    subscribers_hear_of_appends,
    offset_for_timestamp,
    topics_are_created_listed_and_deleted,
    group_offsets_are_stored,
    fencing_tokens_never_repeat,
    group_commits_are_fenced,
    revoke_before_assign,
    state_batches_are_atomic,
    an_older_state_writer_is_fenced,
    retention_start_moves_only_forward,
);
