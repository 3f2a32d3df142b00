//! The fleet view: instances by image, drift from the golden image, patch
//! level; and image patch manifests with their lineage, read from the
//! journal (the run that baked an image recorded the updates it installed
//! in its `patch` step and its parent in its `resolve` step).

use crate::state::Shared;
use repave_core::patch::Update;
use repave_core::provider::Lifecycle;
use repave_core::{ImageId, RunId};
use repave_store::{RunFilter, StepState};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Runs searched for image lineage.
const LINEAGE_RUNS: u32 = 500;

/// How one image came to be.
#[derive(Debug, Clone, Serialize)]
pub struct Bake {
    pub run: RunId,
    pub parent: Option<ImageId>,
    /// Updates this bake installed.
    pub installed: Vec<Update>,
}

/// Image → the bake that made it, from the journal.
pub(crate) fn bakes(shared: &Shared) -> BTreeMap<ImageId, Bake> {
    let mut out = BTreeMap::new();
    let filter = RunFilter {
        limit: Some(LINEAGE_RUNS),
        ..Default::default()
    };
    let store = &shared.store;
    for run in store.list_runs(&filter).unwrap_or_default() {
        let output = |step: &str| {
            store
                .step(&run.id, step)
                .ok()
                .flatten()
                .filter(|s| s.state == StepState::Done)
                .and_then(|s| s.output)
        };
        let Some(image) =
            output("create_image").and_then(|o| o.get("image").and_then(|i| i.as_str()).map(ImageId::new))
        else {
            continue;
        };
        let parent = output("resolve").and_then(|o| o.get("source_image").and_then(|i| i.as_str()).map(ImageId::new));
        let installed: Vec<Update> = output("patch")
            .and_then(|o| o.get("installed").cloned())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        out.entry(image).or_insert(Bake {
            run: run.id.clone(),
            parent,
            installed,
        });
    }
    out
}

/// An image's patch manifest: every update installed along its lineage.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub image: ImageId,
    /// The run that baked it (`None` for an image repave did not bake).
    pub run: Option<RunId>,
    /// Images it descends from, nearest first.
    pub lineage: Vec<ImageId>,
    pub updates: Vec<Update>,
    /// Newest release date among its updates (`YYYY-MM-DD`).
    pub patch_level: Option<String>,
}

pub(crate) fn manifest(bakes: &BTreeMap<ImageId, Bake>, image: &ImageId) -> Manifest {
    let mut updates: BTreeMap<String, Update> = BTreeMap::new();
    let mut lineage = Vec::new();
    let mut seen = BTreeSet::new();
    let mut at = Some(image.clone());
    while let Some(img) = at.take() {
        if !seen.insert(img.clone()) {
            break;
        }
        if let Some(b) = bakes.get(&img) {
            for u in &b.installed {
                updates.entry(u.id.clone()).or_insert_with(|| u.clone());
            }
            if let Some(p) = &b.parent {
                lineage.push(p.clone());
            }
            at = b.parent.clone();
        }
    }
    let updates: Vec<Update> = updates.into_values().collect();
    let patch_level = updates.iter().map(|u| u.released.clone()).max();
    Manifest {
        image: image.clone(),
        run: bakes.get(image).map(|b| b.run.clone()),
        lineage,
        updates,
        patch_level,
    }
}

/// What changed from image `a` to image `b`.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestDiff {
    pub a: Manifest,
    pub b: Manifest,
    /// In `b`, not in `a`.
    pub added: Vec<Update>,
    /// In `a`, not in `b`.
    pub removed: Vec<Update>,
    pub common: usize,
}

pub(crate) fn diff(a: Manifest, b: Manifest) -> ManifestDiff {
    let ids = |m: &Manifest| m.updates.iter().map(|u| u.id.clone()).collect::<BTreeSet<_>>();
    let (ia, ib) = (ids(&a), ids(&b));
    let added = b.updates.iter().filter(|u| !ia.contains(&u.id)).cloned().collect();
    let removed = a.updates.iter().filter(|u| !ib.contains(&u.id)).cloned().collect();
    let common = ia.intersection(&ib).count();
    ManifestDiff {
        a,
        b,
        added,
        removed,
        common,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetImage {
    pub image: ImageId,
    pub instances: u32,
    pub in_service: u32,
    pub golden: bool,
    pub created_at: Option<i64>,
    pub age_seconds: Option<f64>,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetInstance {
    pub id: String,
    pub image: ImageId,
    pub lifecycle: Lifecycle,
    pub healthy: bool,
    pub launched_at: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetGroup {
    pub pipeline: String,
    pub group: String,
    pub desired: u32,
    pub golden_image: Option<ImageId>,
    /// Instances not on the golden image.
    pub drift: u32,
    pub in_service: u32,
    pub images: Vec<FleetImage>,
    pub instances: Vec<FleetInstance>,
    pub error: Option<String>,
}

/// Every pipeline's group as its provider sees it now.
pub(crate) async fn fleet(shared: &Shared) -> Vec<FleetGroup> {
    let bakes = bakes(shared);
    let now = shared.clock.now();
    let mut out = Vec::new();
    for (name, p) in &shared.config.pipelines {
        let Some(provider) = shared.providers.get(name) else {
            continue;
        };
        let mut g = FleetGroup {
            pipeline: name.clone(),
            group: p.group.clone(),
            desired: 0,
            golden_image: None,
            drift: 0,
            in_service: 0,
            images: vec![],
            instances: vec![],
            error: None,
        };
        g.golden_image = provider
            .get_parameter(&p.parameter)
            .await
            .ok()
            .map(|param| ImageId::new(param.value));
        let group = match provider.describe_group(&p.group).await {
            Ok(group) => group,
            Err(e) => {
                g.error = Some(e.to_string());
                out.push(g);
                continue;
            }
        };
        g.desired = group.desired;
        let mut by_image: BTreeMap<ImageId, (u32, u32)> = BTreeMap::new();
        for m in &group.members {
            let serving = m.lifecycle == Lifecycle::InService && m.healthy;
            let e = by_image.entry(m.image.clone()).or_default();
            e.0 += 1;
            e.1 += serving as u32;
            g.in_service += serving as u32;
            if g.golden_image.as_ref() != Some(&m.image) {
                g.drift += 1;
            }
            g.instances.push(FleetInstance {
                id: m.id.to_string(),
                image: m.image.clone(),
                lifecycle: m.lifecycle,
                healthy: m.healthy,
                launched_at: m.launched_at.millis(),
            });
        }
        if let Some(golden) = &g.golden_image {
            by_image.entry(golden.clone()).or_default();
        }
        for (image, (instances, in_service)) in by_image {
            let created_at = provider.describe_image(&image).await.ok().map(|i| i.created_at);
            g.images.push(FleetImage {
                golden: g.golden_image.as_ref() == Some(&image),
                manifest: manifest(&bakes, &image),
                image,
                instances,
                in_service,
                created_at: created_at.map(|c| c.millis()),
                age_seconds: created_at.map(|c| now.since(c).as_secs_f64()),
            });
        }
        out.push(g);
    }
    out
}
