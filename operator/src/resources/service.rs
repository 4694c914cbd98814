//! The Service: in-cluster clients reach the registry on their own node.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{component_labels, metadata, object_name};
use crate::crd::Registry;

/// A ClusterIP Service with `internalTrafficPolicy: Local`, so traffic stays on the node.
pub fn service(registry: &Registry) -> Service {
    Service {
        metadata: metadata(registry, object_name(registry)),
        spec: Some(ServiceSpec {
            selector: Some(component_labels(registry, "registry")),
            internal_traffic_policy: Some("Local".to_owned()),
            ports: Some(vec![ServicePort {
                name: Some("registry".to_owned()),
                port: registry.spec.exposure.port,
                target_port: Some(IntOrString::String("registry".to_owned())),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The URL in-cluster clients use.
pub fn endpoint(registry: &Registry) -> String {
    let scheme = if registry.spec.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let namespace = registry.metadata.namespace.as_deref().unwrap_or("default");
    format!(
        "{scheme}://{}.{namespace}.svc:{}",
        object_name(registry),
        registry.spec.exposure.port
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn node_local_service() {
        let svc = service(&s3_registry());
        let spec = svc.spec.unwrap();
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(
            spec.selector.unwrap()["app.kubernetes.io/component"],
            "registry"
        );
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.port, 5000);
        assert_eq!(
            port.target_port,
            Some(IntOrString::String("registry".to_owned()))
        );
        assert_eq!(endpoint(&s3_registry()), "https://cache.infra.svc:5000");
        assert_eq!(
            endpoint(&host_path_registry()),
            "http://cache.infra.svc:5443"
        );
    }
}
