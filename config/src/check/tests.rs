//! The checks, case by case: what each key accepts and how it is refused.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as Cases, TestCaseError, TestRunner};
use serde_norway::Value;

use crate::schedule::Schedule;
use crate::test_support::{BASIC, error, parse};
use crate::*;

/// Cases per property: enough to find what breaks a parser, few enough
/// that `cargo test` stays fast.
const SOME: u32 = 400;

/// Checks `property` on `SOME` values of `strategy`, as the registry's
/// property tests do (no regression files, the case count printed).
fn check_property<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Cases {
        cases: SOME,
        failure_persistence: None,
        ..Cases::default()
    });
    match runner.run(&strategy, property) {
        Ok(()) => println!("property {name}: {SOME} cases passed"),
        Err(e) => panic!("property {name}: {e}"),
    }
}

#[test]
fn development_settings_pass_the_checks_a_file_must_pass() {
    let s = Config::development([]).unwrap();
    assert_eq!(s.addr, "127.0.0.1:5000".parse().unwrap());
    assert!(
        matches!(&s.storage, StorageSettings::Filesystem { root } if root == Path::new("./data"))
    );
    assert!(s.delete_enabled);
    let moved =
        Config::development([("REGISTRY_HTTP_ADDR".to_owned(), "127.0.0.1:5050".to_owned())])
            .unwrap();
    assert_eq!(moved.addr, "127.0.0.1:5050".parse().unwrap());
}

#[test]
fn reads_distribution_config() {
    let s = parse(BASIC, &[]).unwrap();
    assert_eq!(s.addr, "127.0.0.1:5001".parse().unwrap());
    assert!(
        matches!(&s.storage, StorageSettings::Filesystem { root } if root == Path::new("/tmp/r"))
    );
    assert!(s.delete_enabled);
    assert_eq!(
        s.purge,
        Some(UploadPurge {
            age: Duration::from_secs(168 * 3600),
            interval: Duration::from_secs(24 * 3600),
            dry_run: false,
        })
    );
}

#[test]
fn accepts_debian_default_config_sections() {
    let text = "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: /var/lib/docker-registry\n  delete:\n    enabled: true\nhttp:\n  addr: :5000\n  headers:\n    X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n";
    let s = parse(text, &[]).unwrap();
    assert_eq!(s.addr, "0.0.0.0:5000".parse().unwrap());
}

#[test]
fn unknown_key_is_named() {
    let err = error(&BASIC.replace("rootdirectory", "rootdir"), &[]);
    assert!(
        err.contains("storage.filesystem") && err.contains("rootdir"),
        "{err}"
    );
    let err = error(&format!("{BASIC}bogus: 1\n"), &[]);
    assert!(err.contains("bogus"), "{err}");
}

#[test]
fn invalid_values_are_named() {
    let err = error(&BASIC.replace("enabled: true", "enabled: maybe"), &[]);
    assert!(err.starts_with("storage.delete.enabled"), "{err}");
    let err = error(&BASIC.replace("127.0.0.1:5001", "nowhere"), &[]);
    assert!(err.starts_with("http.addr"), "{err}");
    let err = error(&BASIC.replace("version: 0.1", "version: 2"), &[]);
    assert!(err.starts_with("version"), "{err}");
}

#[test]
fn notifications_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(&htpasswd, "").unwrap();
    let text = format!(
        "{BASIC}auth:\n  htpasswd:\n    realm: r\n    path: {}\nnotifications:\n  endpoints:\n    - name: ci\n      url: http://127.0.0.1:9/hook\n      timeout: 500ms\n      threshold: 3\n      backoff: 1s\n      ignore:\n        actions: [pull]\n",
        htpasswd.display()
    );
    let s = parse(&text, &[]).unwrap();
    assert_eq!(s.endpoints.len(), 1);
    assert_eq!(s.endpoints[0].timeout, Duration::from_millis(500));
    let err = error(&text.replace("[pull]", "[fetch]"), &[]);
    assert!(
        err.starts_with("notifications.endpoints[0].ignore.actions"),
        "{err}"
    );
    let err = error(&text.replace("http://127.0.0.1:9/hook", "ftp://x"), &[]);
    assert!(err.starts_with("notifications.endpoints[0].url"), "{err}");
    let err = error(
        &text.replace(&htpasswd.display().to_string(), "/nonexistent/htpasswd"),
        &[],
    );
    assert!(err.starts_with("auth.htpasswd.path"), "{err}");
}

#[test]
fn the_checks_resolve_what_the_registry_reads() {
    let s = parse(BASIC, &[]).unwrap();
    assert!(s.tls.is_none() && s.htpasswd.is_none() && s.debug.is_none());
    assert!(s.http2 && !s.read_only && s.check_storage && !s.anonymous_pull);
    assert_eq!(s.manifest_max_bytes, 4 * 1024 * 1024);
    assert_eq!(s.manifest_cache_bytes, 16 * 1024 * 1024);
    assert_eq!(s.notification_queue_size, 10000);
    assert!(!s.gc_dry_run && !s.gc_delete_untagged);
    assert_eq!(
        s.log,
        LogSettings {
            level: LogLevel::Info,
            formatter: LogFormatter::Text,
            fields: Vec::new(),
            access_log: true,
        }
    );

    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca, users) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
        dir.path().join("htpasswd"),
    );
    for file in [&cert, &key, &ca, &users] {
        std::fs::write(file, "").unwrap();
    }
    let text = format!(
        "{BASIC}log:\n  level: debug\n  formatter: json\n  fields: {{service: registry, replicas: 3}}\n  accesslog: {{disabled: true}}\nauth:\n  htpasswd: {{path: {users}}}\nhealth:\n  storagedriver: {{enabled: false}}\nberth:\n  anonymouspull: true\n  manifestcachebytes: 0\n  notificationqueuesize: 7\n  gcdeleteuntagged: true\n",
        users = users.display(),
    )
    .replace(
        "http:\n",
        &format!(
            "http:\n  tls: {{certificate: {}, key: {}, minimumtls: tls1.3, clientcas: [{}]}}\n  http2: {{disabled: true}}\n  debug: {{addr: 127.0.0.1:5009, prometheus: {{path: /m}}}}\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    );
    let s = parse(&text, &[]).unwrap();
    assert_eq!(
        s.tls,
        Some(TlsSettings {
            certificate: cert.clone(),
            key: key.clone(),
            minimum_version: TlsVersion::Tls13,
            client_cas: vec![ca.clone()],
        })
    );
    assert!(!s.http2 && !s.check_storage && s.anonymous_pull);
    assert_eq!(
        s.debug,
        Some(DebugListener {
            addr: "127.0.0.1:5009".parse().unwrap(),
            metrics_path: "/m".to_owned(),
        })
    );
    assert_eq!(
        s.htpasswd,
        Some(HtpasswdSettings {
            path: users.clone(),
            realm: "basic-realm".to_owned(),
        })
    );
    assert_eq!(
        s.log,
        LogSettings {
            level: LogLevel::Debug,
            formatter: LogFormatter::Json,
            fields: vec![
                ("replicas".to_owned(), "3".to_owned()),
                ("service".to_owned(), "registry".to_owned()),
            ],
            access_log: false,
        }
    );
    assert_eq!(s.manifest_cache_bytes, 0);
    assert_eq!(s.notification_queue_size, 7);
    assert!(s.gc_delete_untagged);
    let err = error(
        &text.replace(&key.display().to_string(), "/nonexistent/key"),
        &[],
    );
    assert!(err.starts_with("http.tls.key"), "{err}");
}

#[test]
fn s3_settings() {
    let text = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: us-east-1\n    regionendpoint: 127.0.0.1:9000\n    secure: false\n    forcepathstyle: true\n  redirect:\n    disable: true\n";
    let s = parse(
        text,
        &[
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "12345"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", "true"),
        ],
    )
    .unwrap();
    let StorageSettings::S3(s3) = &s.storage else {
        panic!("not s3")
    };
    assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(
        s3.keys,
        Some(S3Keys {
            access: "12345".to_owned(),
            secret: Secret::new("true".to_owned())
        })
    );
    assert!(
        !format!("{s3:?}").contains("true\""),
        "the secret is not logged"
    );
    assert_eq!(s3.chunk_size, 10 * 1024 * 1024);
    assert!(!s3.redirect);
    let err = error(&text.replace("secure: false", "chunksize: 1000"), &[]);
    assert!(err.starts_with("storage.s3.chunksize"), "{err}");
    let both = format!("{text}  filesystem:\n    rootdirectory: /x\n");
    assert!(error(&both, &[]).starts_with("storage:"));
}

#[test]
fn node_cache_needs_a_remote_driver_and_ordered_watermarks() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: us-east-1\n    regionendpoint: http://127.0.0.1:9000\n";
    let path = dir.path().join("cache");
    let section = |extra: &str| {
        format!(
            "berth:\n  nodecache:\n    path: {}\n    maxbytes: 1000\n{extra}",
            path.display()
        )
    };
    let s = parse(&format!("{s3}{}", section("")), &[]).unwrap();
    let cache = s.node_cache.unwrap();
    assert_eq!(
        (cache.max_bytes, cache.high_bytes, cache.low_bytes),
        (1000, 900, 800)
    );
    assert!(!path.exists(), "checking the config creates nothing");
    assert!(parse(s3, &[]).unwrap().node_cache.is_none());
    let err = error(&format!("{BASIC}{}", section("")), &[]);
    assert!(err.starts_with("berth.nodecache:"), "{err}");
    for (bad, key) in [
        ("    highwatermark: 101\n", "berth.nodecache.highwatermark"),
        ("    lowwatermark: 0\n", "berth.nodecache.lowwatermark"),
        ("    lowwatermark: 90\n", "berth.nodecache.lowwatermark"),
        (
            "    highwatermark: 50\n    lowwatermark: 60\n",
            "berth.nodecache.lowwatermark",
        ),
        ("    size: 3\n", "berth.nodecache"),
    ] {
        let err = error(&format!("{s3}{}", section(bad)), &[]);
        assert!(err.starts_with(key), "{bad}: {err}");
    }
    let zero = format!(
        "{s3}{}",
        section("").replace("maxbytes: 1000", "maxbytes: 0")
    );
    assert!(error(&zero, &[]).starts_with("berth.nodecache.maxbytes"));
}

#[test]
fn connection_limits() {
    let s = parse(BASIC, &[]).unwrap();
    assert_eq!(s.connection_limits, ConnectionLimits::default());
    let s = parse(
        &format!("{BASIC}berth:\n  maxconnections: 5\n  idletimeout: 2s\n  stalltimeout: 1m\n"),
        &[],
    )
    .unwrap();
    assert_eq!(
        s.connection_limits,
        ConnectionLimits {
            max_connections: 5,
            idle_timeout: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(60),
        }
    );
    for (bad, key) in [
        ("maxconnections: 0", "berth.maxconnections"),
        ("idletimeout: 0s", "berth.idletimeout"),
        ("stalltimeout: soon", "berth.stalltimeout"),
    ] {
        let err = error(&format!("{BASIC}berth:\n  {bad}\n"), &[]);
        assert!(err.starts_with(key), "{err}");
    }
}

#[test]
fn write_networks_are_checked_ranges() {
    assert!(parse(BASIC, &[]).unwrap().write_networks.is_none());
    let s = parse(
        &format!("{BASIC}berth:\n  writenetworks: [127.0.0.0/8, \"::1\"]\n"),
        &[],
    )
    .unwrap();
    let ranges: Vec<String> = s
        .write_networks
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(ranges, ["127.0.0.0/8", "::1/128"]);
    let err = error(
        &format!("{BASIC}berth:\n  writenetworks: [10.0.0.0/40]\n"),
        &[],
    );
    assert!(err.starts_with("berth.writenetworks"), "{err}");
}

#[test]
fn gc_schedule_or_interval() {
    let s = parse(BASIC, &[]).unwrap();
    assert!(s.gc_schedule.is_none());
    let s = parse(
        &format!("{BASIC}berth:\n  gcschedule: \"@daily\"\n  gcdryrun: true\n"),
        &[],
    )
    .unwrap();
    assert!(matches!(s.gc_schedule, Some(Schedule::Cron(_))));
    assert!(s.gc_dry_run);
    let s = parse(&format!("{BASIC}berth:\n  gcinterval: 6h\n"), &[]).unwrap();
    assert!(
        matches!(s.gc_schedule, Some(Schedule::Every(d)) if d == Duration::from_secs(6 * 3600))
    );
    let err = error(
        &format!("{BASIC}berth:\n  gcschedule: \"0 3 * * *\"\n  gcinterval: 6h\n"),
        &[],
    );
    assert!(
        err.starts_with("berth.gcschedule") && err.contains("not both"),
        "{err}"
    );
    let err = error(
        &format!("{BASIC}berth:\n  gcschedule: \"@every 5m\"\n"),
        &[],
    );
    assert!(err.starts_with("berth.gcschedule"), "{err}");
    let err = error(BASIC, &[("REGISTRY_BERTH_GCSCHEDULE", "61 * * * *")]);
    assert!(err.starts_with("berth.gcschedule"), "{err}");
}

#[test]
fn requires_a_driver() {
    let err = error("version: 0.1\n", &[]);
    assert!(err.starts_with("storage"), "{err}");
}

/// Every key of the file, dotted (`http.addr` and `http.debug.addr`
/// aside: a host name there is looked up, which a test must not do).
const KEYS: &[&str] = &[
    "version",
    "log",
    "log.level",
    "log.formatter",
    "log.fields",
    "log.fields.service",
    "log.accesslog",
    "log.accesslog.disabled",
    "http",
    "http.net",
    "http.host",
    "http.secret",
    "http.relativeurls",
    "http.draintimeout",
    "http.headers",
    "http.headers.X-A",
    "http.tls",
    "http.tls.certificate",
    "http.tls.key",
    "http.tls.minimumtls",
    "http.tls.clientcas",
    "http.http2",
    "http.http2.disabled",
    "http.debug",
    "http.debug.prometheus",
    "http.debug.prometheus.enabled",
    "http.debug.prometheus.path",
    "storage",
    "storage.filesystem",
    "storage.filesystem.rootdirectory",
    "storage.filesystem.maxthreads",
    "storage.s3",
    "storage.s3.bucket",
    "storage.s3.region",
    "storage.s3.regionendpoint",
    "storage.s3.forcepathstyle",
    "storage.s3.accesskey",
    "storage.s3.secretkey",
    "storage.s3.secure",
    "storage.s3.skipverify",
    "storage.s3.v4auth",
    "storage.s3.chunksize",
    "storage.s3.rootdirectory",
    "storage.azure",
    "storage.azure.accountname",
    "storage.azure.accountkey",
    "storage.azure.container",
    "storage.azure.serviceurl",
    "storage.azure.credentials",
    "storage.gcs",
    "storage.gcs.bucket",
    "storage.gcs.keyfile",
    "storage.gcs.chunksize",
    "storage.gcs.endpoint",
    "storage.gcs.maxconcurrency",
    "storage.redirect.disable",
    "storage.delete.enabled",
    "storage.maintenance.uploadpurging.enabled",
    "storage.maintenance.uploadpurging.age",
    "storage.maintenance.uploadpurging.interval",
    "storage.maintenance.uploadpurging.dryrun",
    "storage.maintenance.readonly.enabled",
    "storage.cache",
    "health.storagedriver.enabled",
    "health.storagedriver.interval",
    "auth.htpasswd",
    "auth.htpasswd.realm",
    "auth.htpasswd.path",
    "notifications.endpoints",
    "berth.manifestmaxbytes",
    "berth.anonymouspull",
    "berth.writenetworks",
    "berth.notificationqueuesize",
    "berth.gcgraceperiod",
    "berth.gcschedule",
    "berth.gcinterval",
    "berth.gcdeleteuntagged",
    "berth.gcdryrun",
    "berth.maxconnections",
    "berth.idletimeout",
    "berth.stalltimeout",
    "bogus",
    "http.bogus",
];

/// Values of every type, and text that nearly parses.
fn values() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec![
            "0.1",
            "0s",
            "1h",
            "-1s",
            "30",
            "tls1.3",
            "json",
            "@daily",
            "* * * * *",
            "61 * * * *",
            "http://x",
            "/nonexistent",
            "",
            "text",
            "https",
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    scalar.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..4).prop_map(|m| {
                Value::Mapping(m.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

/// Sets the dotted `key` of `tree` to `value`, making sections as needed.
fn set(tree: &mut Value, key: &str, value: Value) {
    let mut node = tree;
    for part in key.split('.') {
        if !node.is_mapping() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else {
            return;
        };
        node = map.entry(Value::from(part)).or_insert(Value::Null);
    }
    *node = value;
}

#[test]
fn property_any_text_is_a_configuration_or_a_named_error() {
    check_property(
        "any text is a configuration, or an error naming its key",
        prop_oneof!["[a-z:. \n0-9-]{0,80}", any::<String>()],
        |text| {
            match parse(&text, &[]) {
                Ok(_) | Err(ConfigError::Syntax { .. }) => {}
                Err(ConfigError::Invalid { key, message }) => {
                    prop_assert!(!key.is_empty() && !message.is_empty());
                }
                Err(e) => prop_assert!(false, "neither syntax nor a key: {}", e),
            }
            Ok(())
        },
    );
}

#[test]
fn property_any_value_at_any_key_is_taken_or_named() {
    let edits = prop::collection::vec((prop::sample::select(KEYS), values()), 1..4);
    let overrides = prop::collection::vec(
        (
            prop::sample::select(KEYS),
            prop_oneof!["[a-z0-9:@* .-]{0,12}", any::<String>()],
        ),
        0..2,
    );
    check_property(
        "any value at any key is taken, or refused naming the key",
        (edits, overrides),
        |(edits, overrides)| {
            let mut tree: Value = serde_norway::from_str(BASIC).unwrap();
            for (key, value) in &edits {
                set(&mut tree, key, value.clone());
            }
            let text = serde_norway::to_string(&tree).unwrap();
            let env: Vec<(String, String)> = overrides
                .iter()
                .map(|(key, value)| {
                    let var = format!("REGISTRY_{}", key.replace('.', "_").to_uppercase());
                    (var, value.clone())
                })
                .collect();
            match Config::parse(&text, "test.yml", env) {
                Ok(_) => {}
                Err(ConfigError::Invalid { key, message }) => {
                    prop_assert!(!key.is_empty() && !message.is_empty());
                }
                Err(e) => prop_assert!(false, "not an invalid key: {}", e),
            }
            Ok(())
        },
    );
}
