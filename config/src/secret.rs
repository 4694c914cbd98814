//! Values that must never reach a log: passwords, shared keys, secret keys.
//!
//! The resolved settings derive `Debug` so that they can be inspected and
//! logged; a [`Secret`] in them prints as `<redacted>`, so no `Debug` of the
//! settings can leak what it holds.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;

    use crate::test_support::{BASIC, parse};

    /// Every secret a configuration can hold, and none of them in the
    /// settings' `Debug`.
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
            let printed = format!("{:?}", parse(&text, &[]).unwrap());
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
