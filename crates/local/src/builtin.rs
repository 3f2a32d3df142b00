//! The demo base image shipped in the binary (`ImageSource::BuiltinDemo`).

use repave_core::patch::Update;

fn base(package: &str, version: &str, released: &str) -> Update {
    Update {
        id: format!("{package}-{version}"),
        package: package.into(),
        version: version.into(),
        severity: "Unspecified".into(),
        classification: "Updates".into(),
        released: released.into(),
        reboot: false,
        files: Default::default(),
    }
}

/// The base packages the demo image starts with.
pub fn base_packages() -> Vec<Update> {
    vec![
        base("openssl", "3.0.11", "2023-09-19"),
        base("kernel", "6.1.0-10", "2023-07-01"),
        base("curl", "8.4.0", "2023-10-11"),
        base("tzdata", "2024a", "2024-02-01"),
        base("nginx", "1.24.0", "2023-04-11"),
        base("libxml2", "2.9.14", "2022-05-02"),
    ]
}

/// Files of the demo image: relative path → contents.
pub fn demo_files() -> Vec<(String, Vec<u8>)> {
    let installed = serde_json::to_vec_pretty(&base_packages()).expect("serializing static data");
    vec![
        ("etc/demo-app.conf".into(), b"# demo app settings\nhealth = ok\n".to_vec()),
        ("var/lib/pkg/installed.json".into(), installed),
        (
            "README".into(),
            b"repave demo base image.\n\nThe demo app serves / and /health; `repave pkg scan|install` patches it\nfrom the local update feed. Set `health = fail` in etc/demo-app.conf to\nmake the health check fail.\n"
                .to_vec(),
        ),
    ]
}
