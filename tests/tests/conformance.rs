//! The storage seam's conformance suite (`sluice_tests::conformance`) on every
//! engine: one test per check, so a failure names the check and the engine.

use std::sync::Arc;

use sluice_log::{Backend, Log, LogOptions};
use sluice_tests::conformance::{CHECKS, Engine, Suite};

/// The embedded redb log in a fresh directory, with retention checked often.
fn embedded() -> Option<Engine> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogOptions {
        maintenance_interval: std::time::Duration::from_millis(20),
        ..LogOptions::default()
    };
    let log: Arc<dyn Backend> = Arc::new(Log::open(dir.path(), options).expect("open the log"));
    Some((log, Box::new(dir)))
}

/// The Kafka engine on the test cluster (`SLUICE_KAFKA_BOOTSTRAP`); each check's
/// names get a prefix of their own, so checks and runs share the cluster.
fn kafka() -> Option<Engine> {
    let bootstrap = sluice_tests::kafka_bootstrap("conformance")?;
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut options = sluice_kafka::KafkaOptions::new(&bootstrap);
    options.state_dir = Some(dir.path().to_path_buf());
    let engine: Arc<dyn Backend> =
        Arc::new(sluice_kafka::Kafka::open(options).expect("open the Kafka engine"));
    Some((engine, Box::new(dir)))
}

fn run(name: &str, open: fn() -> Option<Engine>, prefixed: bool) {
    let (_, check) = CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no check {name}"));
    let Some((backend, _keep)) = open() else {
        return;
    };
    let prefix = if prefixed {
        format!("c{:08x}-", rand::random::<u32>())
    } else {
        String::new()
    };
    check(&Suite { backend, prefix });
}

/// A test per check for one engine. `not_yet` names the checks of what the engine
/// does not offer yet, each with the issue that brings it; the coverage test fails
/// on any check that is neither run nor listed there.
macro_rules! engine_checks {
    ($engine:ident, prefixed: $prefixed:expr, checks: [$($check:ident),* $(,)?],
     not_yet: [$($missing:ident: $why:literal),* $(,)?]) => {
        mod $engine {
            $(
                #[test]
                fn $check() {
                    super::run(stringify!($check), super::$engine, $prefixed);
                }
            )*

            /// Every check of the suite is run here, or named as not offered yet.
            #[test]
            fn covers_the_whole_suite() {
                let here = [$(stringify!($check)),*];
                let missing: &[(&str, &str)] = &[$((stringify!($missing), $why)),*];
                for (name, _) in sluice_tests::conformance::CHECKS {
                    assert!(
                        here.contains(name) || missing.iter().any(|(m, _)| m == name),
                        "{name} is not run on this engine"
                    );
                }
            }
        }
    };
}

engine_checks!(embedded, prefixed: false, checks: [
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
    state_shards_write_apart,
    state_batches_append_with_their_commit,
    retention_start_moves_only_forward,
], not_yet: [
    cluster_members_are_fenced_and_move: "the gateway keeps group membership (groups::Coordinator)",
]);

engine_checks!(kafka, prefixed: true, checks: [
    dense_offsets_in_request_order,
    reads_honour_their_limits,
    reads_outside_the_range_are_refused,
    a_dedupe_key_is_written_once,
    placement_is_murmur2,
    subscribers_hear_of_appends,
    offset_for_timestamp,
    topics_are_created_listed_and_deleted,
    group_offsets_are_stored,
    cluster_members_are_fenced_and_move,
    state_batches_are_atomic,
    an_older_state_writer_is_fenced,
    state_shards_write_apart,
    state_batches_append_with_their_commit,
], not_yet: [
    fencing_tokens_never_repeat: "members are fenced by the cluster's epochs, not the gateway's tokens",
    group_commits_are_fenced: "the gateway's coordinator is not used: cluster_members_are_fenced_and_move",
    revoke_before_assign: "the gateway's coordinator is not used: cluster_members_are_fenced_and_move",
    retention_start_moves_only_forward: "retention needs segments small enough to delete",
]);
