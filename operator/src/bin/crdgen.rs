//! Prints the `Registry` CustomResourceDefinition as YAML (`crds/registry.yaml`).

fn main() -> Result<(), serde_norway::Error> {
    print!("{}", berth_operator::crd_yaml()?);
    Ok(())
}
