//! Choosing and opening the storage engine. This is the one module of the gateway
//! that names an engine; everything else holds an `Arc<dyn Backend>` (the seam).

use std::sync::Arc;

use sluice_log::{Backend, Log, LogOptions};

use crate::config::{BackendKind, Config};

/// Opens the configured storage engine.
pub(crate) fn open(config: &Config) -> sluice_log::Result<Arc<dyn Backend>> {
    if config.backend == BackendKind::Kafka {
        let mut options =
            sluice_kafka::KafkaOptions::new(config.kafka_bootstrap.as_deref().unwrap_or_default());
        options.client = config
            .kafka_config
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        options.replication = config.kafka_replication;
        options.topic_prefix = config.kafka_topic_prefix.clone();
        options.table_shards = config.kafka_table_shards;
        options.dedupe_window = std::time::Duration::from_secs(config.dedupe_window_secs);
        options.group_session_timeout =
            std::time::Duration::from_millis(config.group_session_timeout_ms);
        options.state_dir = Some(config.data_dir.clone());
        return Ok(Arc::new(sluice_kafka::Kafka::open(options)?));
    }
    let options = LogOptions {
        two_phase_commit: config.two_phase_commit,
        dedupe_window: std::time::Duration::from_secs(config.dedupe_window_secs),
        cache_bytes: config.cache_mb * 1024 * 1024,
        compaction_max_dirty: std::time::Duration::from_millis(config.compaction_max_dirty_ms),
        min_free_bytes: config.min_free_disk_mb << 20,
        on_commit: Some(Arc::new(|stats: &sluice_log::CommitStats| {
            metrics::histogram!("sluice_commit_batch_records").record(stats.records as f64);
            metrics::histogram!("sluice_commit_duration_seconds")
                .record(stats.duration.as_secs_f64());
        })),
        ..LogOptions::default()
    };
    Ok(Arc::new(Log::open(&config.data_dir, options)?))
}
