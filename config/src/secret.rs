//! Values that must never reach a log: passwords, shared keys, secret keys.
//!
//! The configuration file's schema and the resolved settings derive `Debug`
//! so that they can be inspected and logged; a [`Secret`] in them prints as
//! `<redacted>`, so no `Debug` of either can leak what it holds. In the file
//! a secret is its plain value: it reads and writes as what it wraps.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that prints as `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Secret<T> {
        Secret(value)
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use crate::schema::Config;
    use crate::test_support::{BASIC, parse};

    /// Every secret a configuration can hold, and none of them in the
    /// `Debug` of the file as read (the schema) or of the settings.
    #[test]
    fn no_secret_of_a_configuration_prints() {
        let azure_key = b"azure-shared-key-value";
        let azure_key_base64 = BASE64.encode(azure_key);
        let storages = [
            "  s3:\n    bucket: b\n    region: r\n    accesskey: AKID\n    secretkey: s3-secret-key-value\n"
                .to_owned(),
            format!("  azure:\n    accountname: acct\n    accountkey: {azure_key_base64}\n    container: c\n"),
        ];
        let secrets = [
            "s3-secret-key-value",
            &azure_key_base64,
            &format!("{:?}", azure_key.to_vec()),
            "upstream-password-value",
            "notification-token-value",
        ];
        let extra = "proxy:\n  remoteurl: https://upstream.example\n  username: u\n  password: upstream-password-value\nnotifications:\n  endpoints:\n    - name: hook\n      url: https://hooks.example/events\n      headers:\n        Authorization: [Bearer notification-token-value]\n";
        for storage in storages {
            let text =
                BASIC.replace("  filesystem:\n    rootdirectory: /tmp/r\n", &storage) + extra;
            let schema: Config = serde_norway::from_str(&text).unwrap();
            for printed in [
                format!("{schema:?}"),
                format!("{:?}", parse(&text, &[]).unwrap()),
            ] {
                for secret in secrets {
                    assert!(!printed.contains(secret), "{secret} printed in {printed}");
                }
                assert!(
                    printed.contains("AKID") || printed.contains("acct"),
                    "{printed}"
                );
            }
        }
    }

    /// The secrets a schema holds read and write as their plain values, so
    /// a file the operator writes says what the user gave.
    #[test]
    fn a_secret_reads_and_writes_as_its_value() {
        let text = BASIC.replace(
            "  filesystem:\n    rootdirectory: /tmp/r\n",
            "  s3:\n    bucket: b\n    region: r\n    accesskey: AKID\n    secretkey: 12345\n  gcs:\n    bucket: g\n    credentials:\n      private_key: gcs-private-key-value\n",
        );
        let schema: Config = serde_norway::from_str(&text).unwrap();
        let written = serde_norway::to_string(&schema).unwrap();
        assert!(written.contains("secretkey: '12345'"), "{written}");
        assert!(
            written.contains("private_key: gcs-private-key-value"),
            "{written}"
        );
        assert!(!format!("{schema:?}").contains("gcs-private-key-value"));
        assert_eq!(serde_norway::from_str::<Config>(&written).unwrap(), schema);
    }

    /// A secret of the wrong shape is refused without showing what was given.
    #[test]
    fn a_secret_of_the_wrong_shape_is_not_echoed() {
        let text = BASIC.replace(
            "  filesystem:\n    rootdirectory: /tmp/r\n",
            "  s3:\n    bucket: b\n    region: r\n    accesskey: AKID\n    secretkey: [s3-secret-key-value]\n",
        );
        let err = crate::test_support::error(&text, &[]);
        assert!(err.contains("storage.s3.secretkey"), "{err}");
        assert!(!err.contains("s3-secret-key-value"), "{err}");
    }
}
