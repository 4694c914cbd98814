//! Prints the `Registry` CustomResourceDefinition as YAML (`crds/registry.yaml`).

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", berth_operator::crd_yaml()?);
    Ok(())
}
