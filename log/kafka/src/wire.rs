//! Kafka requests that librdkafka does not offer, spoken directly: one blocking
//! call on a connection of its own to the broker that must answer, encoded and
//! decoded by the `kafka-protocol` crate. Partition sizes (`DescribeLogDirs`), and
//! the consumer-group RPCs of KIP-848 sent on behalf of members that live in no
//! client process (`FindCoordinator`, `ConsumerGroupHeartbeat`,
//! `ConsumerGroupDescribe`, `OffsetCommit` and `OffsetFetch` with the member's id
//! and epoch). Plaintext listeners only: with `security.protocol`
//! other than `PLAINTEXT` these calls are not made (see [`Wire::new`]).
//!
//! What the broker allows (Kafka 4, checked by `tests/tests/kafka_wire.rs`): a
//! member is a member id and an epoch, bound to no connection, so any gateway may
//! heartbeat and commit for it. A gateway that never saw member M learns M's epoch
//! and assignment from the broker, either with a full heartbeat (epoch 0 and the
//! subscription: the coordinator answers M's current epoch and partitions, and M
//! is not fenced) or read-only with `ConsumerGroupDescribe`, and goes on from
//! there; a commit at any other epoch is refused with `STALE_MEMBER_EPOCH`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeConfigsRequest, DescribeConfigsResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListGroupsRequest,
    ListGroupsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, RequestHeader, TopicName,
    describe_configs_request::DescribeConfigsResource,
    describe_log_dirs_request::DescribableLogDirTopic,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    metadata_request::MetadataRequestTopic,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopics},
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Largest response read (a DescribeLogDirs of many partitions is a few MB).
const MAX_RESPONSE: usize = 64 << 20;

/// Partition sizes in bytes, by (Kafka topic name, partition).
pub(crate) type Sizes = Vec<((String, i32), u64)>;

/// What a group's coordinator answered a heartbeat.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Kafka's error code (0: none), and its name.
    pub error: i16,
    pub error_name: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's partitions by topic id (16 bytes), when the answer carries
    /// them (it does when they changed).
    pub assignment: Option<Vec<([u8; 16], Vec<i32>)>>,
}

/// One member of a group, as `ConsumerGroupDescribe` tells it.
#[derive(Debug, Clone)]
pub struct MemberState {
    pub member_id: String,
    pub member_epoch: i32,
    /// Its partitions, by topic name.
    pub assignment: Vec<(String, Vec<i32>)>,
    /// The same, by topic id.
    pub assigned_ids: Vec<([u8; 16], Vec<i32>)>,
}

/// Direct calls to brokers.
pub struct Wire {
    timeout: Duration,
    /// Connections that answered their last call, by address, for the next.
    idle: std::sync::Mutex<std::collections::HashMap<String, Vec<TcpStream>>>,
}

/// Idle connections kept per broker.
const IDLE_PER_BROKER: usize = 16;

impl Wire {
    /// Direct calls with `timeout`, or none when the client settings name a
    /// security protocol these calls do not speak.
    pub fn new(client: &[(String, String)], timeout: Duration) -> Option<Wire> {
        let plaintext = client
            .iter()
            .find(|(k, _)| k == "security.protocol")
            .is_none_or(|(_, v)| v.eq_ignore_ascii_case("plaintext"));
        plaintext.then(|| Wire {
            timeout,
            idle: Default::default(),
        })
    }

    /// The size in bytes of each of `partitions` (topic, partition) on the
    /// broker at `addr` (the partitions it leads, asked of it).
    pub(crate) fn partition_sizes(
        &self,
        addr: &str,
        partitions: &[(String, i32)],
    ) -> Result<Sizes, String> {
        let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
        for (t, p) in partitions {
            by_topic.entry(t).or_default().push(*p);
        }
        let request = DescribeLogDirsRequest::default().with_topics(Some(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    DescribableLogDirTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        ));
        let response: DescribeLogDirsResponse =
            self.call(addr, ApiKey::DescribeLogDirs, 2, &request)?;
        let mut sizes = Vec::new();
        for dir in response.results {
            for t in dir.topics {
                for p in t.partitions {
                    if !p.is_future_key {
                        sizes.push((
                            (t.name.0.to_string(), p.partition_index),
                            p.partition_size.max(0) as u64,
                        ));
                    }
                }
            }
        }
        Ok(sizes)
    }

    /// The `host:port` of `group`'s coordinator, asked of the first of
    /// `bootstrap` (`host:port,...`) that answers.
    pub fn find_coordinator(&self, bootstrap: &str, group: &str) -> Result<String, String> {
        let request = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![StrBytes::from_string(group.to_string())]);
        let mut last = format!("no broker in {bootstrap:?}");
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match self.call::<_, FindCoordinatorResponse>(
                addr,
                ApiKey::FindCoordinator,
                4,
                &request,
            ) {
                Ok(r) => match r.coordinators.into_iter().next() {
                    Some(c) if c.error_code == 0 => return Ok(format!("{}:{}", c.host, c.port)),
                    Some(c) => last = format!("FindCoordinator: {}", error_name(c.error_code)),
                    None => last = "FindCoordinator: no coordinator in the answer".into(),
                },
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Heartbeats for `member_id` of `group` at `epoch` (0 joins, -1 leaves);
    /// `subscribe` names the topics when joining or changing them; `owned` is
    /// what the member holds now, by topic id (how it acknowledges giving
    /// partitions up; none: unchanged).
    #[allow(clippy::too_many_arguments)]
    pub fn heartbeat(
        &self,
        coordinator: &str,
        group: &str,
        member_id: &str,
        epoch: i32,
        subscribe: Option<&[&str]>,
        rebalance_timeout_ms: i32,
        owned: Option<&[([u8; 16], Vec<i32>)]>,
    ) -> Result<Heartbeat, String> {
        let mut request = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_member_epoch(epoch)
            .with_rebalance_timeout_ms(rebalance_timeout_ms)
            .with_subscribed_topic_names(subscribe.map(|ts| {
                ts.iter()
                    .map(|t| TopicName(StrBytes::from_string(t.to_string())))
                    .collect()
            }));
        if epoch == 0 {
            request = request.with_topic_partitions(Some(Vec::new()));
        } else if let Some(owned) = owned {
            request = request.with_topic_partitions(Some(
                owned
                    .iter()
                    .map(|(id, ps)| {
                        kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions::default()
                            .with_topic_id(uuid::Uuid::from_bytes(*id))
                            .with_partitions(ps.clone())
                    })
                    .collect(),
            ));
        }
        let r: ConsumerGroupHeartbeatResponse =
            self.call(coordinator, ApiKey::ConsumerGroupHeartbeat, 1, &request)?;
        Ok(Heartbeat {
            error: r.error_code,
            error_name: (r.error_code != 0).then(|| error_name(r.error_code)),
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            assignment: r.assignment.map(|a| {
                a.topic_partitions
                    .into_iter()
                    .map(|tp| (*tp.topic_id.as_bytes(), tp.partitions))
                    .collect()
            }),
        })
    }

    /// The members of `group`, with their epochs and partitions.
    pub fn describe_members(
        &self,
        coordinator: &str,
        group: &str,
    ) -> Result<Vec<MemberState>, String> {
        self.describe_group(coordinator, group).map(|(_, m)| m)
    }

    /// The epoch of `group` (0 when it has no members) and its members.
    pub fn describe_group(
        &self,
        coordinator: &str,
        group: &str,
    ) -> Result<(i32, Vec<MemberState>), String> {
        const GROUP_ID_NOT_FOUND: i16 = 69;
        let request = ConsumerGroupDescribeRequest::default()
            .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let r: ConsumerGroupDescribeResponse =
            self.call(coordinator, ApiKey::ConsumerGroupDescribe, 0, &request)?;
        let Some(g) = r.groups.into_iter().next() else {
            return Ok((0, Vec::new()));
        };
        match g.error_code {
            0 => {}
            GROUP_ID_NOT_FOUND => return Ok((0, Vec::new())),
            code => return Err(format!("ConsumerGroupDescribe: {}", error_name(code))),
        }
        let members = g
            .members
            .into_iter()
            .map(|m| MemberState {
                member_id: m.member_id.to_string(),
                member_epoch: m.member_epoch,
                assignment: m
                    .assignment
                    .topic_partitions
                    .iter()
                    .map(|tp| (tp.topic_name.0.to_string(), tp.partitions.clone()))
                    .collect(),
                assigned_ids: m
                    .assignment
                    .topic_partitions
                    .into_iter()
                    .map(|tp| (*tp.topic_id.as_bytes(), tp.partitions))
                    .collect(),
            })
            .collect();
        Ok((g.group_epoch, members))
    }

    /// The `host:port` of every broker of the cluster, asked of `addr`.
    pub fn brokers(&self, addr: &str) -> Result<Vec<String>, String> {
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        let r: MetadataResponse = self.call(addr, ApiKey::Metadata, 12, &request)?;
        Ok(r.brokers
            .into_iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect())
    }

    /// The groups the broker at `addr` coordinates.
    pub fn list_groups(&self, addr: &str) -> Result<Vec<String>, String> {
        let r: ListGroupsResponse =
            self.call(addr, ApiKey::ListGroups, 5, &ListGroupsRequest::default())?;
        if r.error_code != 0 {
            return Err(format!("ListGroups: {}", error_name(r.error_code)));
        }
        Ok(r.groups
            .into_iter()
            .map(|g| g.group_id.to_string())
            .collect())
    }

    /// Every committed offset of `group`: (topic, partition, offset).
    pub fn group_offsets(
        &self,
        coordinator: &str,
        group: &str,
    ) -> Result<Vec<(String, i32, i64)>, String> {
        let request = OffsetFetchRequest::default()
            .with_require_stable(true)
            .with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                    .with_member_epoch(-1)
                    .with_topics(None),
            ]);
        let r: OffsetFetchResponse = self.call(coordinator, ApiKey::OffsetFetch, 9, &request)?;
        let Some(g) = r.groups.into_iter().next() else {
            return Err("OffsetFetch: no group in the answer".into());
        };
        if g.error_code != 0 {
            return Err(format!("OffsetFetch: {}", error_name(g.error_code)));
        }
        Ok(g.topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name.0.to_string();
                t.partitions
                    .into_iter()
                    .filter(|p| p.error_code == 0 && p.committed_offset >= 0)
                    .map(move |p| (name.clone(), p.partition_index, p.committed_offset))
            })
            .collect())
    }

    /// Deletes `group` (its committed offsets); answers Kafka's error code
    /// (`GROUP_NOT_EMPTY` while it has members).
    pub fn delete_group(&self, coordinator: &str, group: &str) -> Result<i16, String> {
        let request = DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let r: DeleteGroupsResponse = self.call(coordinator, ApiKey::DeleteGroups, 2, &request)?;
        Ok(r.results.first().map_or(0, |g| g.error_code))
    }

    /// Commits `offsets` (next offset to read, by partition) of `topic` for
    /// `group`, as `member_id` at `epoch` (a member of another epoch is refused
    /// with `STALE_MEMBER_EPOCH`; an empty member id and epoch -1 commit for an
    /// empty group). Answers each partition's error code.
    pub fn commit_offsets(
        &self,
        coordinator: &str,
        group: &str,
        member_id: &str,
        epoch: i32,
        topic: &str,
        offsets: &[(i32, i64)],
    ) -> Result<Vec<(i32, i16)>, String> {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id_or_member_epoch(epoch)
            .with_member_id(StrBytes::from_string(member_id.to_string()))
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|&(p, o)| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_committed_leader_epoch(-1)
                            })
                            .collect(),
                    ),
            ]);
        let r: OffsetCommitResponse = self.call(coordinator, ApiKey::OffsetCommit, 9, &request)?;
        Ok(r.topics
            .into_iter()
            .flat_map(|t| t.partitions)
            .map(|p| (p.partition_index, p.error_code))
            .collect())
    }

    /// The committed offsets of `partitions` of `topic` for `group` (-1 where
    /// none is), asked as `member_id` at `epoch`.
    pub fn committed_offsets(
        &self,
        coordinator: &str,
        group: &str,
        member_id: Option<&str>,
        epoch: i32,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, i64)>, String> {
        let request = OffsetFetchRequest::default()
            .with_require_stable(true)
            .with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                    .with_member_id(member_id.map(|m| StrBytes::from_string(m.to_string())))
                    .with_member_epoch(epoch)
                    .with_topics(Some(vec![
                        OffsetFetchRequestTopics::default()
                            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                            .with_partition_indexes(partitions.to_vec()),
                    ])),
            ]);
        let r: OffsetFetchResponse = self.call(coordinator, ApiKey::OffsetFetch, 9, &request)?;
        let Some(g) = r.groups.into_iter().next() else {
            return Err("OffsetFetch: no group in the answer".into());
        };
        if g.error_code != 0 {
            return Err(format!("OffsetFetch: {}", error_name(g.error_code)));
        }
        let mut out = Vec::new();
        for t in g.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(format!("OffsetFetch: {}", error_name(p.error_code)));
                }
                out.push((p.partition_index, p.committed_offset));
            }
        }
        Ok(out)
    }

    /// The value of config `key` of `group` (a GROUP config resource; the
    /// broker's default where the group has none of its own).
    pub fn group_config(
        &self,
        addr: &str,
        group: &str,
        key: &str,
    ) -> Result<Option<String>, String> {
        const GROUP: i8 = 32;
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(GROUP)
                .with_resource_name(StrBytes::from_string(group.to_string()))
                .with_configuration_keys(Some(vec![StrBytes::from_string(key.to_string())])),
        ]);
        let r: DescribeConfigsResponse = self.call(addr, ApiKey::DescribeConfigs, 4, &request)?;
        let Some(resource) = r.results.into_iter().next() else {
            return Ok(None);
        };
        if resource.error_code != 0 {
            return Err(format!(
                "DescribeConfigs: {}",
                error_name(resource.error_code)
            ));
        }
        Ok(resource
            .configs
            .into_iter()
            .find(|c| c.name.as_str() == key)
            .and_then(|c| c.value.map(|v| v.to_string())))
    }

    /// Sets `configs` (name, value) of `group` (a GROUP config resource, e.g.
    /// `consumer.session.timeout.ms`), asked of the broker at `addr`: the outer
    /// error when it could not be asked, the inner when it refused.
    pub fn set_group_configs(
        &self,
        addr: &str,
        group: &str,
        configs: &[(&str, String)],
    ) -> Result<Result<(), String>, String> {
        const GROUP: i8 = 32;
        const SET: i8 = 0;
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(GROUP)
                .with_resource_name(StrBytes::from_string(group.to_string()))
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            AlterableConfig::default()
                                .with_name(StrBytes::from_string(k.to_string()))
                                .with_config_operation(SET)
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                ),
        ]);
        let r: IncrementalAlterConfigsResponse =
            self.call(addr, ApiKey::IncrementalAlterConfigs, 1, &request)?;
        for resource in r.responses {
            if resource.error_code != 0 {
                return Ok(Err(format!(
                    "{}: {}",
                    error_name(resource.error_code),
                    resource
                        .error_message
                        .map(|m| m.to_string())
                        .unwrap_or_default()
                )));
            }
        }
        Ok(Ok(()))
    }

    /// The topic ids of `topics`, asked of the broker at `addr` (topics it does
    /// not know are left out).
    pub fn topic_ids(
        &self,
        addr: &str,
        topics: &[&str],
    ) -> Result<Vec<(String, [u8; 16])>, String> {
        let request = MetadataRequest::default().with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                })
                .collect(),
        ));
        let r: MetadataResponse = self.call(addr, ApiKey::Metadata, 12, &request)?;
        Ok(r.topics
            .into_iter()
            .filter(|t| t.error_code == 0)
            .filter_map(|t| Some((t.name?.0.to_string(), *t.topic_id.as_bytes())))
            .collect())
    }

    /// Sends one request of `key` at `version` to `addr` and reads its response,
    /// on a connection left open by an earlier call when there is one (a new one
    /// when that fails: the broker may have closed it).
    fn call<Q: Encodable, R: Decodable>(
        &self,
        addr: &str,
        key: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<R, String> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("{key:?} to {addr}: {what}: {e}");
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(1)
            .with_client_id(Some(StrBytes::from_static_str("sluice")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, key.request_header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| fail("encode", &e))?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(&body);
        let pooled = self
            .idle
            .lock()
            .expect("idle lock")
            .get_mut(addr)
            .and_then(Vec::pop);
        let (stream, mut buf) = match pooled.map(|mut s| (exchange(&mut s, &frame), s)) {
            Some((Ok(buf), s)) => (s, buf),
            _ => {
                let mut s = self.connect(addr).map_err(|e| fail("connect", &e))?;
                let buf = exchange(&mut s, &frame).map_err(|e| fail("exchange", &e))?;
                (s, buf)
            }
        };
        let answer = kafka_protocol::messages::ResponseHeader::decode(
            &mut buf,
            key.response_header_version(version),
        )
        .and_then(|_| R::decode(&mut buf, version))
        .map_err(|e| fail("decode", &e))?;
        let mut idle = self.idle.lock().expect("idle lock");
        let kept = idle.entry(addr.to_string()).or_default();
        if kept.len() < IDLE_PER_BROKER {
            kept.push(stream);
        }
        Ok(answer)
    }

    fn connect(&self, addr: &str) -> std::io::Result<TcpStream> {
        let socket = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::other("no address"))?;
        let stream = TcpStream::connect_timeout(&socket, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Writes one request frame and reads one response frame.
fn exchange(stream: &mut TcpStream, frame: &[u8]) -> std::io::Result<bytes::Bytes> {
    stream.write_all(frame)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len).max(0) as usize;
    if len > MAX_RESPONSE {
        return Err(std::io::Error::other(format!("a response of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf)?;
    Ok(bytes::Bytes::from(buf))
}

/// Kafka's name for an error code.
fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map(|e| format!("{e:?}"))
        .unwrap_or_else(|| format!("error {code}"))
}
