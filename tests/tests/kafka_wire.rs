//! The Kafka engine's direct broker calls (`sluice_kafka::wire`) against the
//! three-broker test cluster: what KIP-848's consumer-group protocol allows a
//! gateway that serves members living in no client process.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sluice_kafka::members::{MemberError, Members};
use sluice_kafka::wire::Wire;
use sluice_tests::kafka_bootstrap;

const FENCED_MEMBER_EPOCH: i16 = 110;
const STALE_MEMBER_EPOCH: i16 = 113;

fn topic(bootstrap: &str, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(3));
    let made = futures_executor::block_on(admin.create_topics(
        [&t],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create topic");
    assert!(made.iter().all(|r| r.is_ok()), "{made:?}");
}

/// The cluster, and a topic of `partitions` with a group name, both new, for
/// `test` (None when `SLUICE_TEST_SKIP` names kafka).
fn setup(test: &str, partitions: i32) -> Option<(String, String, String)> {
    let bootstrap = kafka_bootstrap(test)?;
    let run = format!("{:08x}", rand::random::<u32>());
    let (name, group) = (format!("{test}-{run}"), format!("{test}-group-{run}"));
    topic(&bootstrap, &name, partitions);
    Some((bootstrap, name, group))
}

/// A gateway's members (10 s calls, 10 s rebalance timeout).
fn members(bootstrap: &str) -> Members {
    Members::new(
        bootstrap,
        &[],
        Duration::from_secs(10),
        Duration::from_secs(10),
    )
    .expect("plaintext")
}

/// A full heartbeat (epoch 0 with the subscription to `topic`) for `member`.
fn join(
    wire: &Wire,
    coordinator: &str,
    group: &str,
    member: &str,
    topic: &str,
) -> Result<sluice_kafka::wire::Heartbeat, String> {
    wire.heartbeat(coordinator, group, member, 0, Some(&[topic]), 30_000, None)
}

/// A member is its id and epoch, bound to no connection: a second gateway that
/// never saw member M learns M's epoch and partitions from the broker, by a full
/// heartbeat (epoch 0 with the subscription) or by `ConsumerGroupDescribe`, and
/// heartbeats and commits on for it; M is not fenced and the first gateway
/// carries on. A commit at another epoch is refused (`STALE_MEMBER_EPOCH`), a
/// heartbeat ahead of the coordinator's epoch is fenced, and a leave (epoch -1)
/// from either gateway removes M.
#[test]
fn a_member_is_served_by_a_gateway_that_never_saw_it() {
    let Some((bootstrap, name, group)) =
        setup("a_member_is_served_by_a_gateway_that_never_saw_it", 6)
    else {
        return;
    };
    let member = format!("{group}-m");
    let first = Wire::new(&[], Duration::from_secs(10)).expect("plaintext");
    let coordinator = first
        .find_coordinator(&bootstrap, &group)
        .expect("find the coordinator");

    // The first gateway joins M; the topic may take a moment to reach the
    // coordinator's metadata, so heartbeat until M holds all six partitions.
    let mut hb = join(&first, &coordinator, &group, &member, &name).expect("join");
    assert_eq!(hb.error, 0, "{hb:?}");
    let mut epoch = hb.member_epoch;
    let mut owned = 0;
    for _ in 0..100 {
        if let Some(a) = &hb.assignment {
            owned = a.iter().map(|(_, ps)| ps.len()).sum::<usize>();
        }
        if owned == 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        hb = first
            .heartbeat(&coordinator, &group, &member, epoch, None, -1, None)
            .expect("heartbeat");
        assert_eq!(hb.error, 0, "{hb:?}");
        epoch = hb.member_epoch;
    }
    assert_eq!(owned, 6, "M never got the topic's partitions: {hb:?}");
    assert!(epoch > 0);

    // A second gateway, knowing only M's id.
    let second = Wire::new(&[], Duration::from_secs(10)).expect("plaintext");
    let coordinator2 = second
        .find_coordinator(&bootstrap, &group)
        .expect("find the coordinator");
    assert_eq!(coordinator2, coordinator);
    // Joining again with epoch 0 (a full heartbeat) is answered with M's epoch
    // and partitions: M is not fenced, and the first gateway carries on.
    let joined = join(&second, &coordinator2, &group, &member, &name)
        .expect("a join for a known member is answered");
    assert_eq!(joined.error, 0, "{joined:?}");
    assert!(joined.member_epoch >= epoch, "{joined:?}");
    let owned: usize = joined
        .assignment
        .iter()
        .flatten()
        .map(|(_, ps)| ps.len())
        .sum();
    assert_eq!(owned, 6, "{joined:?}");
    let back = first
        .heartbeat(&coordinator, &group, &member, epoch, None, -1, None)
        .expect("heartbeat from the first gateway");
    assert_eq!(back.error, 0, "{back:?}");
    epoch = back.member_epoch;
    // Describing the group (read-only) tells the same.
    let members = second
        .describe_members(&coordinator2, &group)
        .expect("describe");
    let m = members
        .iter()
        .find(|m| m.member_id == member)
        .unwrap_or_else(|| panic!("M is a member: {members:?}"));
    assert_eq!(m.member_epoch, epoch);
    let mut partitions: Vec<i32> = m
        .assignment
        .iter()
        .filter(|(t, _)| *t == name)
        .flat_map(|(_, ps)| ps.clone())
        .collect();
    partitions.sort_unstable();
    assert_eq!(partitions, vec![0, 1, 2, 3, 4, 5]);
    let on = second
        .heartbeat(
            &coordinator2,
            &group,
            &member,
            m.member_epoch,
            None,
            -1,
            None,
        )
        .expect("heartbeat from the second gateway");
    assert_eq!(on.error, 0, "{on:?}");
    assert_eq!(on.member_epoch, epoch);

    // Commits carry the member's epoch: the current one is taken, through
    // either gateway; any other is refused.
    let offsets: Vec<(i32, i64)> = (0..6).map(|p| (p, 10 + i64::from(p))).collect();
    let committed = second
        .commit_offsets(&coordinator2, &group, &member, epoch, &name, &offsets)
        .expect("commit");
    assert!(committed.iter().all(|(_, e)| *e == 0), "{committed:?}");
    let stale = first
        .commit_offsets(&coordinator, &group, &member, epoch - 1, &name, &[(0, 99)])
        .expect("answered");
    assert_eq!(stale, vec![(0, STALE_MEMBER_EPOCH)]);
    let mut read = first
        .committed_offsets(
            &coordinator,
            &group,
            Some(&member),
            epoch,
            &name,
            &[0, 1, 2, 3, 4, 5],
        )
        .expect("committed offsets");
    read.sort_unstable();
    assert_eq!(read, offsets);

    let ahead = second
        .heartbeat(&coordinator2, &group, &member, epoch + 5, None, -1, None)
        .expect("answered");
    assert_eq!(ahead.error, FENCED_MEMBER_EPOCH, "{ahead:?}");

    // Leaving: epoch -1, from either gateway.
    let left = second
        .heartbeat(&coordinator2, &group, &member, -1, None, -1, None)
        .expect("leave");
    assert_eq!(left.error, 0, "{left:?}");
    let members = first
        .describe_members(&coordinator, &group)
        .expect("describe");
    assert!(members.iter().all(|m| m.member_id != member), "{members:?}");
}

/// Heartbeats every consumer through the gateways in turn (each call to the
/// next one, as a round-robin proxy would send them) until every consumer holds
/// some partitions and together they hold each of `partitions` exactly once;
/// returns them by consumer.
fn settle(
    gateways: &[&Members],
    group: &str,
    topic: &str,
    consumers: &[&str],
    partitions: usize,
) -> Vec<Vec<i32>> {
    let mut turn = 0;
    let mut last = Vec::new();
    for _ in 0..200 {
        last = consumers
            .iter()
            .map(|c| {
                turn += 1;
                let a = gateways[turn % gateways.len()]
                    .heartbeat(group, c, &[topic])
                    .expect("heartbeat");
                a.partitions
                    .iter()
                    .filter(|(t, _)| t == topic)
                    .flat_map(|(_, ps)| ps.clone())
                    .collect::<Vec<i32>>()
            })
            .collect();
        let mut all: Vec<i32> = last.iter().flatten().copied().collect();
        all.sort_unstable();
        if all == (0..partitions as i32).collect::<Vec<_>>() && last.iter().all(|ps| !ps.is_empty())
        {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the assignments never settled: {last:?}");
}

/// Members served alternately by two gateways: three consumers of a 6-partition
/// topic get disjoint assignments covering every partition; after one leaves,
/// the other two cover them all; commits from a member that left or at an epoch
/// the member never had are refused, one at the current epoch is read back
/// through the other gateway.
#[test]
fn members_move_between_gateways() {
    let Some((bootstrap, name, group)) = setup("members_move_between_gateways", 6) else {
        return;
    };
    let (a, b) = (members(&bootstrap), members(&bootstrap));
    assert_eq!(
        Members::member_id(&group, "c1"),
        Members::member_id(&group, "c1")
    );
    assert_ne!(
        Members::member_id(&group, "c1"),
        Members::member_id(&group, "c2")
    );
    let three = settle(&[&a, &b], &group, &name, &["c1", "c2", "c3"], 6);
    assert_eq!(three.iter().map(Vec::len).sum::<usize>(), 6, "{three:?}");

    let c3 = a.heartbeat(&group, "c3", &[&name]).expect("heartbeat");
    a.leave(&group, "c3").expect("leave");
    let two = settle(&[&b, &a], &group, &name, &["c1", "c2"], 6);
    assert_eq!(two.iter().map(Vec::len).sum::<usize>(), 6, "{two:?}");

    // A member that left commits nothing, and neither does an epoch ahead of
    // the coordinator's.
    let gone: Vec<(i32, i64)> = three[2].iter().map(|&p| (p, 3)).collect();
    assert!(
        matches!(
            b.commit(&group, "c3", c3.epoch, &name, &gone),
            Err(MemberError::Stale(_))
        ),
        "a commit from a member that left"
    );
    let now = b.heartbeat(&group, "c1", &[&name]).expect("heartbeat");
    let owned: Vec<i32> = now
        .partitions
        .iter()
        .flat_map(|(_, ps)| ps.clone())
        .collect();
    assert!(!owned.is_empty(), "{now:?}");
    let offsets: Vec<(i32, i64)> = owned.iter().map(|&p| (p, 7)).collect();
    assert!(
        matches!(
            a.commit(&group, "c1", now.epoch + 1, &name, &offsets),
            Err(MemberError::Stale(_))
        ),
        "a commit at an epoch the member never had"
    );
    a.commit(&group, "c1", now.epoch, &name, &offsets)
        .expect("commit at the current epoch");
    let mut read = b.committed(&group, &name, &owned).expect("committed");
    read.sort_unstable();
    assert_eq!(read, offsets);
    for c in ["c1", "c2"] {
        b.leave(&group, c).expect("leave");
    }
}

/// A child process killed when dropped (so a failing test leaves none behind).
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Java consumer (Kafka's console consumer, `group.protocol=consumer`) and
/// Sluice members of one group share the topic's partitions: together they hold
/// each exactly once; when the Java consumer stops, the Sluice members take its
/// partitions.
#[test]
fn a_java_consumer_and_sluice_members_share_one_group() {
    let Some((bootstrap, name, group)) =
        setup("a_java_consumer_and_sluice_members_share_one_group", 6)
    else {
        return;
    };
    let cluster = sluice_tests::workspace_root().join("tests/kafka/cluster");
    let java = std::process::Command::new(&cluster)
        .args([
            "run",
            "org.apache.kafka.tools.consumer.ConsoleConsumer",
            "--bootstrap-server",
            &bootstrap,
            "--topic",
            &name,
            "--group",
            &group,
            "--consumer-property",
            "group.protocol=consumer",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the console consumer (tests/kafka/cluster run)");
    let mut java = Stopped(java);
    let members = members(&bootstrap);
    let wire = Wire::new(&[], Duration::from_secs(10)).expect("plaintext");
    let coordinator = wire
        .find_coordinator(&bootstrap, &group)
        .expect("find the coordinator");
    // Until the group has the Java member and ours, and all of them together
    // hold each partition once with every member holding some.
    let mut described = Vec::new();
    let mut shared = false;
    for _ in 0..300 {
        for c in ["s1", "s2"] {
            members.heartbeat(&group, c, &[&name]).expect("heartbeat");
        }
        described = wire
            .describe_members(&coordinator, &group)
            .expect("describe");
        let mut all: Vec<i32> = described
            .iter()
            .flat_map(|m| m.assignment.iter().flat_map(|(_, ps)| ps.clone()))
            .collect();
        all.sort_unstable();
        if described.len() == 3
            && all == vec![0, 1, 2, 3, 4, 5]
            && described.iter().all(|m| !m.assignment.is_empty())
        {
            shared = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = [
        Members::member_id(&group, "s1"),
        Members::member_id(&group, "s2"),
    ];
    // SIGTERM: the console consumer leaves the group as it stops.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &java.0.id().to_string()])
        .status();
    let _ = java.0.wait();
    assert!(
        shared,
        "the Java consumer and ours never shared the group: {described:?}"
    );
    assert!(
        described.iter().any(|m| !ours.contains(&m.member_id)),
        "{described:?}"
    );
    // The Java consumer left; ours take its partitions.
    let mut held = Vec::new();
    for _ in 0..600 {
        held = ["s1", "s2"]
            .iter()
            .flat_map(|c| {
                members
                    .heartbeat(&group, c, &[&name])
                    .expect("heartbeat")
                    .partitions
                    .into_iter()
                    .flat_map(|(_, ps)| ps)
            })
            .collect();
        held.sort_unstable();
        if held == vec![0, 1, 2, 3, 4, 5] {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(held, vec![0, 1, 2, 3, 4, 5]);
    for c in ["s1", "s2"] {
        members.leave(&group, c).expect("leave");
    }
}

/// A group's session timeout is its own (a group config on the brokers): a
/// member that stops heartbeating is dropped once it runs out, and a value
/// below the brokers' minimum is refused with their reason.
#[test]
fn a_groups_session_timeout_drops_a_silent_member() {
    let Some((bootstrap, name, group)) = setup("a_groups_session_timeout_drops_a_silent_member", 2)
    else {
        return;
    };
    let members = members(&bootstrap);
    // The test cluster's minimum is 1 s (group.consumer.min.session.timeout.ms).
    match members.set_session_timeout(
        &group,
        Duration::from_millis(200),
        Some(Duration::from_millis(100)),
    ) {
        Err(MemberError::Invalid(why)) => assert!(
            why.contains("INVALID_CONFIG") || why.contains("InvalidConfig"),
            "{why}"
        ),
        other => panic!("a session timeout below the brokers' minimum: {other:?}"),
    }
    members
        .set_session_timeout(
            &group,
            Duration::from_secs(2),
            Some(Duration::from_millis(500)),
        )
        .expect("set the session timeout");
    let joined = members.heartbeat(&group, "quiet", &[&name]).expect("join");
    assert_eq!(joined.heartbeat_interval, Duration::from_millis(500));
    let wire = Wire::new(&[], Duration::from_secs(10)).expect("plaintext");
    let coordinator = wire
        .find_coordinator(&bootstrap, &group)
        .expect("coordinator");
    let id = Members::member_id(&group, "quiet");
    let mut gone = false;
    for _ in 0..300 {
        let described = wire
            .describe_members(&coordinator, &group)
            .expect("describe");
        if described.iter().all(|m| m.member_id != id) {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "the silent member was never dropped");
}
