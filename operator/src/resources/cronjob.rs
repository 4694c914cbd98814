//! The CronJob running `berth-registry gc` against the registry's own config.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::pod::{pod_spec, registry_container};
use super::{CONFIG_DIR, CONFIG_KEY, component_labels, metadata, object_name};
use crate::crd::Registry;

/// Name of the GC CronJob of a Registry.
pub fn cron_job_name(registry: &Registry) -> String {
    format!("{}-gc", object_name(registry))
}

/// Whether the Registry has a GC CronJob: a schedule is set and the
/// storage is shared. Node-local (hostPath) content is collected by each
/// registry pod instead.
pub fn runs_cron_job(registry: &Registry) -> bool {
    let scheduled = registry
        .spec
        .gc
        .as_ref()
        .is_some_and(|gc| gc.schedule.is_some());
    scheduled && !registry.spec.node_local_storage()
}

/// The GC CronJob running `image` with the config of the ConfigMap
/// `config_map`, when [`runs_cron_job`].
pub fn cron_job(registry: &Registry, image: &str, config_map: &str) -> Option<CronJob> {
    if !runs_cron_job(registry) {
        return None;
    }
    let gc = registry.spec.gc.as_ref()?;
    let schedule = gc.schedule.clone()?;
    let mut args = vec![
        "gc".to_owned(),
        "--config".to_owned(),
        format!("{CONFIG_DIR}/{CONFIG_KEY}"),
    ];
    args.push(format!("--grace-period={}", gc.grace_period));
    if gc.dry_run {
        args.push("--dry-run".to_owned());
    }
    if gc.delete_untagged {
        args.push("--delete-untagged".to_owned());
    }
    let labels = component_labels(registry, "gc");
    let container = Container {
        // The report `berth-registry gc` writes becomes the pod's
        // termination message, which the operator puts into status.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..registry_container(registry, image, "gc", args)
    };
    let pod = PodSpec {
        restart_policy: Some("Never".to_owned()),
        ..pod_spec(registry, image, config_map, vec![container])
    };
    Some(CronJob {
        metadata: metadata(registry, cron_job_name(registry)),
        spec: Some(CronJobSpec {
            schedule,
            suspend: Some(gc.suspend),
            concurrency_policy: Some("Forbid".to_owned()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn gc_job_runs_against_the_same_config() {
        let cron = cron_job(&s3_registry(), IMAGE, "cache-config-0").expect("S3 with a schedule");
        assert_eq!(cron.metadata.name.as_deref(), Some("cache-gc"));
        let spec = cron.spec.unwrap();
        assert_eq!(spec.schedule, "0 3 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.args.as_ref().unwrap(),
            &[
                "gc",
                "--config",
                "/etc/berth/config.yml",
                "--grace-period=1h",
                "--delete-untagged"
            ]
        );
        assert_eq!(container.env.as_ref().unwrap().len(), 2);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.enable_service_links, Some(false));
    }

    #[test]
    fn a_gc_pod_of_a_node_cache_registry_mounts_no_cache() {
        let mut registry = s3_registry();
        registry.spec.node_cache = serde_json::from_value(serde_json::json!({"size": "1Gi"})).ok();
        let cron = cron_job(&registry, IMAGE, "cache-config-0").expect("a CronJob");
        let job = cron.spec.unwrap().job_template.spec.unwrap();
        let pod = job.template.spec.unwrap();
        let volumes = pod.volumes.unwrap_or_default();
        assert!(
            volumes.iter().all(|v| v.name != "node-cache"),
            "{volumes:?}"
        );
        assert_eq!(pod.init_containers, None, "nothing prepares a node's disk");
    }

    #[test]
    fn no_cron_job_without_schedule_or_for_node_local_storage() {
        assert!(cron_job(&host_path_registry(), IMAGE, "cache-config-0").is_none());
        assert!(!runs_cron_job(&host_path_registry()));
        let unscheduled =
            registry(serde_json::json!({"storage": {"s3": {"bucket": "images"}}, "gc": {}}));
        assert!(cron_job(&unscheduled, IMAGE, "cache-config-0").is_none());
        assert!(!runs_cron_job(&unscheduled));
        assert!(runs_cron_job(&s3_registry()));
    }
}
