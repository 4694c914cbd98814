//! Watched objects that may not decode.
//!
//! The API server checks a Registry against the CRD's schema, but the schema
//! cannot say everything the Rust types do: the `int32` format of fields
//! that come from k8s-openapi (an affinity preference's `weight`, say) is
//! not enforced, and a status written by someone else can hold a count
//! beyond `i32`. A list or watch of `Registry` fails as a whole on one such
//! object, which would stop the controller for every Registry. A
//! [`Decoded`] never fails to decode: an object that does not fit keeps its
//! metadata and the error, and reconcile reports it on the object.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::crd::RegistryStatus;

/// An object of kind `K` as watched: decoded, or kept undecoded with the reason.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<K> {
    /// The object fits `K`.
    Valid(K),
    /// The object does not fit `K`.
    Invalid(Box<Undecodable>),
}

/// What is known of an object that does not fit its Rust type.
#[derive(Debug, Clone, PartialEq)]
pub struct Undecodable {
    /// Its metadata (which the API server validates, so it always decodes).
    pub metadata: ObjectMeta,
    /// Why it does not decode, naming the field (`spec.affinity...weight: ...`).
    pub error: String,
    /// Its status, when that part alone decodes as a Registry's.
    pub status: Option<RegistryStatus>,
}

impl<K: DeserializeOwned> Decoded<K> {
    /// Decodes `value` as `K`, or keeps its metadata and the error.
    pub fn from_value(value: Value) -> Result<Decoded<K>, serde_json::Error> {
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => Ok(Decoded::Valid(object)),
            Err(error) => {
                let field = error.path().to_string();
                let error = match field.as_str() {
                    "" | "." => error.into_inner().to_string(),
                    _ => format!("{field}: {}", error.into_inner()),
                };
                let metadata =
                    ObjectMeta::deserialize(value.get("metadata").unwrap_or(&Value::Null))?;
                let status = value
                    .get("status")
                    .and_then(|status| RegistryStatus::deserialize(status).ok());
                Ok(Decoded::Invalid(Box::new(Undecodable {
                    metadata,
                    error,
                    status,
                })))
            }
        }
    }

    /// The decoded object, if it decoded.
    pub fn valid(&self) -> Option<&K> {
        match self {
            Decoded::Valid(object) => Some(object),
            Decoded::Invalid(_) => None,
        }
    }
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Decoded::from_value(value).map_err(D::Error::custom)
    }
}

/// The same API resource as `K`: watching `Decoded<K>` lists and watches `K`'s objects.
impl<K: Resource<DynamicType = ()>> Resource for Decoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &()) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Decoded::Valid(object) => object.meta(),
            Decoded::Invalid(undecodable) => &undecodable.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Decoded::Valid(object) => object.meta_mut(),
            Decoded::Invalid(undecodable) => &mut undecodable.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use serde_json::json;

    use super::*;
    use crate::crd::Registry;

    fn object(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "cache", "namespace": "infra", "generation": 2},
            "spec": spec, "status": status,
        })
    }

    #[test]
    fn a_registry_that_fits_decodes() {
        let value = object(json!({"storage": {"s3": {"bucket": "images"}}}), json!({}));
        let decoded: Decoded<Registry> = serde_json::from_value(value).unwrap();
        assert_eq!(
            decoded.valid().map(|r| r.name_any()),
            Some("cache".to_owned())
        );
    }

    #[test]
    fn a_registry_that_does_not_fit_keeps_its_metadata_and_the_reason() {
        let spec = json!({
            "storage": {"s3": {"bucket": "images"}},
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 4294967296_i64, "preference": {}}]}},
        });
        let value = object(spec, json!({"desiredNodes": 2, "readyNodes": 1}));
        let decoded: Decoded<Registry> = serde_json::from_value(value).unwrap();
        let Decoded::Invalid(undecodable) = &decoded else {
            panic!("decoded: {decoded:?}");
        };
        assert!(
            undecodable
                .error
                .starts_with("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight: "),
            "{}",
            undecodable.error
        );
        assert!(
            undecodable.error.contains("expected i32"),
            "{}",
            undecodable.error
        );
        assert_eq!(decoded.name_any(), "cache");
        assert_eq!(decoded.namespace().as_deref(), Some("infra"));
        assert_eq!(undecodable.status.as_ref().map(|s| s.ready_nodes), Some(1));
        assert_eq!(Decoded::<Registry>::kind(&()), "Registry");
        assert_eq!(Decoded::<Registry>::api_version(&()), "berth.dev/v1alpha1");
        assert_eq!(Decoded::<Registry>::plural(&()), "registries");
    }

    #[test]
    fn a_status_that_does_not_fit_is_dropped() {
        let value = object(
            json!({"storage": {"s3": {"bucket": "images"}}}),
            json!({"desiredNodes": 4294967296_i64}),
        );
        let Decoded::<Registry>::Invalid(undecodable) = serde_json::from_value(value).unwrap()
        else {
            panic!("decoded");
        };
        assert!(
            undecodable.error.starts_with("status.desiredNodes: "),
            "{}",
            undecodable.error
        );
        assert_eq!(undecodable.status, None);
    }

    #[test]
    fn metadata_must_decode() {
        let value = json!({"metadata": {"name": 7}, "spec": {}});
        assert!(serde_json::from_value::<Decoded<Registry>>(value).is_err());
    }
}
