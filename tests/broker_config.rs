//! The config file against the real binary: settings, per-topic partitions and retention, and
//! flags overriding the file.

mod common;
use common::*;

#[test]
fn config_file_sets_defaults_and_topic_overrides_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("imago.conf");
    std::fs::write(
        &file,
        "# broker settings\n\
         default_partitions = 2\n\
         line-bytes-max = 2048\n\
         get_bytes_max = 4096\n\
         [topic orders]\n\
         partitions = 6\n\
         retention_hours = 720\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let broker = Broker::start(&["--config", path, "--get-bytes-max", "8192"]);
    let mut conn = broker.connect();

    // A configured topic exists from the start with its partitions.
    conn.put("orders", 5, b"to the last partition", 1);
    conn.send(&put_cmd("orders", 6, 0, b"x", 2));
    let reply = conn.read_reply();
    assert_eq!(reply.code(), Some(400), "{reply:?}");
    assert_eq!(
        reply.body(),
        b"partition 6 out of range, topic orders has 6 partitions"
    );

    // Other topics get the file's default partitions.
    conn.put("other", 1, b"ok", 3);
    conn.send(&put_cmd("other", 2, 0, b"x", 4));
    assert_eq!(conn.read_reply().code(), Some(400));

    let settings = conn.stats(Some("settings"));
    let get = |name: &str| {
        settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} in {settings:?}"))
    };
    assert_eq!(get("default_partitions"), "2");
    assert_eq!(get("line_bytes_max"), "2048");
    assert_eq!(get("get_bytes_max"), "8192", "the flag overrides the file");
}

#[test]
fn a_config_file_with_an_unknown_setting_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.conf");
    std::fs::write(&file, "flush = sync\ncolour = blue\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imago"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("colour"), "{err}");
}
