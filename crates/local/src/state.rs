//! The local cloud's persisted state: one JSON document the daemon (its only
//! writer) rewrites atomically after every mutation, so a restarted daemon
//! finds images, parameters, launch specs, groups and instances again.
//! Runtime-only things (process handles, balancers, command results) live in
//! the daemon, not here.

use crate::images::Manifest;
use repave_core::config::HealthCheck;
use repave_core::provider::{Image, Instance, InstanceSpec, LaunchSpec, LaunchSpecRef, Parameter};
use repave_core::{ImageId, InstanceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// An image: metadata plus the manifest of its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub image: Image,
    pub manifest: Manifest,
}

/// An instance as the daemon tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: Instance,
    pub spec: InstanceSpec,
    /// Port allocated at launch (kept across stop/start).
    pub port: u16,
    /// Pid (= process group id) of the running process, for adoption after a
    /// daemon restart.
    pub pid: Option<i32>,
    /// Group the instance was launched for, if any.
    pub group: Option<String>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub id: InstanceId,
    pub launch_spec: LaunchSpecRef,
    pub protected: bool,
    /// Being drained and terminated; no longer counts toward desired.
    pub terminating: bool,
    /// Whether the member should be a balancer target (false after an
    /// explicit deregister, so the reconciler does not re-add it).
    pub registered: bool,
}

/// A scaling group and its balancer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub name: String,
    pub min: u32,
    pub max: u32,
    pub desired: u32,
    pub launch_spec: LaunchSpecRef,
    pub port: u16,
    pub health_check: HealthCheck,
    pub deregistration_delay: Duration,
    pub members: Vec<MemberRecord>,
    /// Target-tracking scaling (state files from before it read as none).
    #[serde(default)]
    pub scaling: Option<repave_core::config::Scaling>,
}

/// The whole persisted document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub images: BTreeMap<ImageId, ImageRecord>,
    /// create_image client token → image.
    pub image_tokens: BTreeMap<String, ImageId>,
    pub instances: BTreeMap<InstanceId, InstanceRecord>,
    /// launch client token → instance.
    pub instance_tokens: BTreeMap<String, InstanceId>,
    /// Every version of every parameter, oldest first.
    pub parameters: BTreeMap<String, Vec<Parameter>>,
    /// Every version of every launch spec, oldest first.
    pub launch_specs: BTreeMap<String, Vec<LaunchSpec>>,
    pub groups: BTreeMap<String, GroupRecord>,
}

impl State {
    /// Read the document, or start empty when there is none.
    pub fn load(path: &Path) -> std::io::Result<State> {
        match std::fs::read(path) {
            Ok(data) => serde_json::from_slice(&data).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Write the document atomically.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::util::write_atomic(path, &data)
    }

    /// The launch spec version `r`, if it exists.
    pub fn launch_spec(&self, r: &LaunchSpecRef) -> Option<&LaunchSpec> {
        self.launch_specs.get(&r.name)?.iter().find(|s| s.version == r.version)
    }
}
