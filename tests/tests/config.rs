//! The TOML config file: its settings apply under environment variables and flags,
//! and a bad file stops the server at start with a message naming the problem.

use std::process::Command;

use serde_json::json;
use sluice_tests::{Server, binary, client, create_topic};

/// Status of producing one record whose body is about 3000 bytes.
async fn produce_3000(s: &Server) -> u16 {
    let c = client();
    create_topic(&c, s, "t", 1).await;
    let r = c
        .post(s.url("/v1/topics/t/records"))
        .json(&json!({"value": "x".repeat(3000)}))
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn file_settings_apply_under_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    // `listen` and `data-dir` here lose to the flags the test harness passes.
    let cfg = write_config(
        &dir,
        "listen = \"127.0.0.1:1\"\ndata-dir = \"/nonexistent/sluice\"\nmax_body_bytes = 2000\n",
    );
    let from_file = Server::start_with(&["--config", &cfg]);
    assert_eq!(
        produce_3000(&from_file).await,
        413,
        "the file's limit applies"
    );

    let env_wins =
        Server::start_with_env(&["--config", &cfg], &[("SLUICE_MAX_BODY_BYTES", "4000")]);
    assert_eq!(
        produce_3000(&env_wins).await,
        200,
        "the variable beats the file"
    );

    let flag_wins = Server::start_with_env(
        &["--config", &cfg, "--max-body-bytes", "1000"],
        &[("SLUICE_MAX_BODY_BYTES", "4000")],
    );
    assert_eq!(produce_3000(&flag_wins).await, 413, "the flag beats both");

    // SLUICE_CONFIG names the file too.
    let by_env = Server::start_with_env(&[], &[("SLUICE_CONFIG", &cfg)]);
    assert_eq!(produce_3000(&by_env).await, 413);
}

#[test]
fn a_bad_file_stops_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("verbose = true\n", "unknown setting 'verbose'"),
        ("cache-mb = \"lots\"\n", "'cache-mb' = \"lots\""),
        (
            "group-session-timeout-ms = 5\n",
            "5 is not in 1000..=300000",
        ),
        ("listen = [\"a\", \"b\"]\n", "'listen' must be a string"),
        ("listen = \n", "TOML parse error"),
    ];
    for (text, expected) in cases {
        let cfg = write_config(&dir, text);
        let out = Command::new(binary())
            .args(["--config", &cfg, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains("config file") && stderr.contains(expected),
            "{text}: {stderr}"
        );
    }
    let out = Command::new(binary())
        .args(["--config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read it"));
}

/// Settings that do not go together stop the server before it opens anything.
#[test]
fn settings_that_do_not_go_together_stop_the_server() {
    let cases: [(&[&str], &str); 2] = [
        (
            &["--backend", "kafka"],
            "--backend kafka needs --kafka-bootstrap",
        ),
        (
            &[
                "--backend",
                "kafka",
                "--kafka-bootstrap",
                "127.0.0.1:1",
                "--bind-consumers-to-subject",
            ],
            "--bind-consumers-to-subject is not offered with --backend kafka",
        ),
    ];
    for (args, expected) in cases {
        // Not the test cluster's address from the environment: the flags alone.
        let out = Command::new(binary())
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("SLUICE_KAFKA_BOOTSTRAP")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
