//! The ServiceAccount the registry and GC pods run as.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{metadata, object_name};
use crate::crd::Registry;

/// A ServiceAccount without an automounted token (the registry never calls the API).
pub fn service_account(registry: &Registry) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(registry, object_name(registry)),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn named_after_the_registry() {
        let sa = service_account(&s3_registry());
        assert_eq!(sa.metadata.name.as_deref(), Some("cache"));
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}
