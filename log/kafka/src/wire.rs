//! Kafka requests that librdkafka does not offer (today the partition sizes of
//! `DescribeLogDirs`), spoken directly: one blocking call on a connection of its
//! own to the broker that must answer, encoded and decoded by the `kafka-protocol`
//! crate. Plaintext listeners only: with `security.protocol` other than
//! `PLAINTEXT` these calls are not made (see `Wire::new`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, RequestHeader, TopicName,
    describe_log_dirs_request::DescribableLogDirTopic,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Largest response read (a DescribeLogDirs of many partitions is a few MB).
const MAX_RESPONSE: usize = 64 << 20;

/// Partition sizes in bytes, by (Kafka topic name, partition).
pub(crate) type Sizes = Vec<((String, i32), u64)>;

/// Direct calls to brokers.
pub(crate) struct Wire {
    timeout: Duration,
}

impl Wire {
    /// Direct calls with `timeout`, or none when the client settings name a
    /// security protocol these calls do not speak.
    pub(crate) fn new(client: &[(String, String)], timeout: Duration) -> Option<Wire> {
        let plaintext = client
            .iter()
            .find(|(k, _)| k == "security.protocol")
            .is_none_or(|(_, v)| v.eq_ignore_ascii_case("plaintext"));
        plaintext.then_some(Wire { timeout })
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

    /// Sends one request of `key` at `version` to `addr` and reads its response.
    fn call<Q: Encodable, R: Decodable>(
        &self,
        addr: &str,
        key: ApiKey,
        version: i16,
        request: &Q,
    ) -> Result<R, String> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| format!("{key:?} to {addr}: {what}: {e}");
        let socket = addr
            .to_socket_addrs()
            .map_err(|e| fail("resolve", &e))?
            .next()
            .ok_or_else(|| fail("resolve", &"no address"))?;
        let mut stream =
            TcpStream::connect_timeout(&socket, self.timeout).map_err(|e| fail("connect", &e))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(|e| fail("socket", &e))?;
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
        stream.write_all(&frame).map_err(|e| fail("send", &e))?;
        let mut len = [0u8; 4];
        stream
            .read_exact(&mut len)
            .map_err(|e| fail("receive", &e))?;
        let len = i32::from_be_bytes(len).max(0) as usize;
        if len > MAX_RESPONSE {
            return Err(fail("receive", &format!("a response of {len} bytes")));
        }
        let mut buf = vec![0u8; len];
        stream
            .read_exact(&mut buf)
            .map_err(|e| fail("receive", &e))?;
        let mut buf = bytes::Bytes::from(buf);
        kafka_protocol::messages::ResponseHeader::decode(
            &mut buf,
            key.response_header_version(version),
        )
        .and_then(|_| R::decode(&mut buf, version))
        .map_err(|e| fail("decode", &e))
    }
}
