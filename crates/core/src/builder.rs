//! The builder's instance settings: the config's where it gives them, else
//! the group's — its launch spec's instance type, security groups and
//! profile, its own subnets — so a builder never lands in the default VPC
//! or on the cloud's default type by accident. Pure: the engine's `resolve`
//! and `repave plan` compute the same spec from the same descriptions.

use crate::config::Builder;
use crate::provider::{Group, InstanceSpec};

/// What a provider's builder cannot do without (AWS: an instance profile,
/// or it never reaches SSM; a type, or EC2 picks `m1.small`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BuilderNeeds {
    pub instance_profile: bool,
    pub instance_type: bool,
}

/// The builder's settings and, for each, where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderSpec {
    pub spec: InstanceSpec,
    /// "subnet subnet-1 (the group's first subnet)", one per setting given.
    pub origins: Vec<String>,
}

/// Fill what `config` leaves out from the group and its launch spec
/// (`launch`); `Err` names the setting a builder of this provider cannot go
/// without (`pipeline` is the pipeline's name, for the config path).
pub fn builder_spec(
    pipeline: &str,
    config: &Builder,
    group: &Group,
    launch: &InstanceSpec,
    needs: BuilderNeeds,
) -> Result<BuilderSpec, String> {
    let mut origins = Vec::new();
    let mut pick = |what: &str, own: Option<String>, theirs: Option<(String, &str)>| -> Option<String> {
        match (own, theirs) {
            (Some(v), _) => {
                origins.push(format!("{what} {v} (config)"));
                Some(v)
            }
            (None, Some((v, from))) => {
                origins.push(format!("{what} {v} ({from})"));
                Some(v)
            }
            (None, None) => None,
        }
    };
    let subnet = pick(
        "subnet",
        config.subnet.clone(),
        launch
            .subnet
            .clone()
            .map(|s| (s, "the group's launch spec"))
            .or_else(|| group.subnets.first().map(|s| (s.clone(), "the group's first subnet"))),
    );
    let instance_type = pick(
        "instance type",
        config.instance_type.clone(),
        launch.instance_type.clone().map(|t| (t, "the group's launch spec")),
    );
    let instance_profile = pick(
        "instance profile",
        config.instance_profile.clone(),
        launch.instance_profile.clone().map(|p| (p, "the group's launch spec")),
    );
    let security_groups = if !config.security_groups.is_empty() {
        origins.push(format!(
            "security groups {} (config)",
            config.security_groups.join(", ")
        ));
        config.security_groups.clone()
    } else if !launch.security_groups.is_empty() {
        origins.push(format!(
            "security groups {} (the group's launch spec)",
            launch.security_groups.join(", ")
        ));
        launch.security_groups.clone()
    } else {
        vec![]
    };
    let at = format!("[pipelines.{pipeline}.builder]");
    if needs.instance_profile && instance_profile.is_none() {
        return Err(format!(
            "{at} instance_profile is not set and group {}'s launch spec has none: a builder without an instance profile can never reach SSM; name a profile whose role has AmazonSSMManagedInstanceCore",
            group.name
        ));
    }
    if needs.instance_type && instance_type.is_none() {
        return Err(format!(
            "{at} instance_type is not set and group {}'s launch spec has none (the cloud would pick its default type); set one",
            group.name
        ));
    }
    Ok(BuilderSpec {
        spec: InstanceSpec {
            instance_type,
            subnet,
            security_groups,
            instance_profile,
            ..Default::default()
        },
        origins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(subnets: &[&str]) -> Group {
        Group {
            name: "web".into(),
            min: 1,
            max: 2,
            desired: 1,
            launch_spec: crate::provider::LaunchSpecRef {
                name: "lt".into(),
                version: 1,
            },
            members: vec![],
            balancer: None,
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            health: Default::default(),
            suspended: vec![],
        }
    }

    fn launch() -> InstanceSpec {
        InstanceSpec {
            instance_type: Some("t3.small".into()),
            security_groups: vec!["sg-app".into()],
            instance_profile: Some("app".into()),
            command: vec!["app".into()],
            ..Default::default()
        }
    }

    const AWS: BuilderNeeds = BuilderNeeds {
        instance_profile: true,
        instance_type: true,
    };

    #[test]
    fn the_group_fills_what_the_config_leaves_out() {
        let b = builder_spec(
            "web",
            &Builder::default(),
            &group(&["subnet-a", "subnet-b"]),
            &launch(),
            AWS,
        )
        .unwrap();
        assert_eq!(b.spec.subnet.as_deref(), Some("subnet-a"));
        assert_eq!(b.spec.instance_type.as_deref(), Some("t3.small"));
        assert_eq!(b.spec.security_groups, vec!["sg-app".to_string()]);
        assert_eq!(b.spec.instance_profile.as_deref(), Some("app"));
        assert!(b.spec.command.is_empty(), "the group's process is not the builder's");
        assert!(
            b.origins
                .contains(&"subnet subnet-a (the group's first subnet)".to_string()),
            "{:?}",
            b.origins
        );
    }

    #[test]
    fn the_config_wins() {
        let config = Builder {
            subnet: Some("subnet-x".into()),
            instance_type: Some("m7i.large".into()),
            security_groups: vec!["sg-b".into()],
            instance_profile: Some("builder".into()),
            ..Default::default()
        };
        let b = builder_spec("web", &config, &group(&["subnet-a"]), &launch(), AWS).unwrap();
        assert_eq!(b.spec.subnet.as_deref(), Some("subnet-x"));
        assert_eq!(b.spec.instance_type.as_deref(), Some("m7i.large"));
        assert_eq!(b.spec.security_groups, vec!["sg-b".to_string()]);
        assert_eq!(b.spec.instance_profile.as_deref(), Some("builder"));
        assert!(b.origins.iter().all(|o| o.ends_with("(config)")), "{:?}", b.origins);
    }

    #[test]
    fn no_profile_anywhere_is_refused_naming_the_setting() {
        let mut l = launch();
        l.instance_profile = None;
        let e = builder_spec("web", &Builder::default(), &group(&[]), &l, AWS).unwrap_err();
        assert!(e.starts_with("[pipelines.web.builder] instance_profile"), "{e}");
        l.instance_type = None;
        l.instance_profile = Some("p".into());
        let e = builder_spec("web", &Builder::default(), &group(&[]), &l, AWS).unwrap_err();
        assert!(e.starts_with("[pipelines.web.builder] instance_type"), "{e}");
        let ok = builder_spec(
            "web",
            &Builder::default(),
            &group(&[]),
            &InstanceSpec::default(),
            BuilderNeeds::default(),
        );
        assert!(ok.is_ok(), "a provider that needs neither takes none");
    }
}
