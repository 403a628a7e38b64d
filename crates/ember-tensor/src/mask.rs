//! Masks that survive training: a keep mask attached to a float parameter as burn's
//! reparameterization, so that `Param::val()` is always `base` with the pruned elements zeroed.
//!
//! Writing zeros into a weight does not survive training: Adam's moments move them again (a
//! 50 % mask was down to 9 % zeros after 3 steps). A mask held in a reparameterization is a
//! `Bool` parameter: the optimizer never touches it, the gradient of a pruned element is zero,
//! and it is saved and reloaded with the model's record. [`strip`] folds it into plain weights.
//!
//! burn allows one reparameterization per parameter, so [`WeightReparam`] is the one Ember
//! attaches, and other weight transforms (fake quantization) join it as further fields.

use std::collections::BTreeMap;

use burn::module::{
    Module, ModuleMapper, ModuleVisitor, Param, ParamId, Reparameterization, Reparameterizer,
};
use burn::tensor::{Bool, Tensor};

use crate::{Error, Result, params};

/// Ember's reparameterization of a float parameter: the effective value is `base` with every
/// element whose `keep` flag is false set to zero.
#[derive(Module, Debug)]
pub struct WeightReparam {
    /// Which elements are kept, flattened in row-major order; `None` keeps everything.
    pub keep: Option<Param<Tensor<1, Bool>>>,
}

impl Reparameterization for WeightReparam {
    const NAME: &'static str = "ember";

    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        match &self.keep {
            None => base,
            Some(keep) => {
                let keep: Tensor<D, Bool> = keep.val().reshape(base.shape());
                base.mask_fill(keep.bool_not(), 0.0)
            }
        }
    }
}

/// A mask's flags, read back to the host.
pub fn read_flags(mask: Tensor<1, Bool>) -> Result<Vec<bool>> {
    // Backends store booleans differently (wgpu as u32, flex natively): read them as integers.
    let ints = mask
        .int()
        .into_data()
        .convert::<i32>()
        .try_into_vec::<i32>()
        .map_err(|e| Error::Data {
            reason: format!("{e:?}"),
        })?;
    Ok(ints.into_iter().map(|v| v != 0).collect())
}

/// Keep masks by parameter path (`layers.0.weight`), each flattened in row-major order.
pub type Masks = BTreeMap<String, Tensor<1, Bool>>;

/// The masks attached to `module`'s parameters, by path.
pub fn masks<M: Module>(module: &M) -> Masks {
    let mut reader = MaskReader::default();
    module.visit(&mut reader);
    reader.found
}

/// Attach `masks` to `module`, replacing any mask a parameter already has. Every path must
/// name a float parameter of the module and every mask must have as many elements as it.
pub fn set_masks<M: Module>(module: M, masks: &Masks) -> Result<M> {
    let infos = params(&module);
    for (path, mask) in masks {
        let info = infos
            .iter()
            .find(|p| &p.path == path)
            .ok_or_else(|| Error::InvalidConfig {
                field: "mask path",
                value: path.clone(),
                reason: "no float parameter of the model has this path",
            })?;
        let [len] = mask.dims();
        if len != info.numel() {
            return Err(Error::MaskShape {
                path: path.clone(),
                expected: info.shape.clone(),
                actual: len,
            });
        }
    }
    let attached = self::masks(&module);
    let module = module.apply_reparameterization(AttachMasks {
        masks,
        attached: &attached,
    });
    Ok(module.map(&mut ReplaceMasks {
        masks,
        path: vec![],
    }))
}

/// Check that every mask attached to `module` fits its parameter: the check to run after
/// loading a record, where a mask saved for another shape would otherwise fail inside the
/// first forward pass.
pub fn check_masks<M: Module>(module: &M) -> Result<()> {
    let infos = params(module);
    for (path, mask) in masks(module) {
        let [len] = mask.dims();
        match infos.iter().find(|p| p.path == path) {
            Some(info) if info.numel() == len => {}
            Some(info) => {
                return Err(Error::MaskShape {
                    path,
                    expected: info.shape.clone(),
                    actual: len,
                });
            }
            None => {
                return Err(Error::InvalidConfig {
                    field: "mask path",
                    value: path,
                    reason: "the mask belongs to no float parameter",
                });
            }
        }
    }
    Ok(())
}

/// Fold every reparameterization into plain weights: the masked elements become stored zeros
/// and the model no longer carries masks, ready for export.
pub fn strip<M: Module>(module: M) -> M {
    module.materialize()
}

/// Attaches an all-keep [`WeightReparam`] to the parameters that `masks` names and that carry
/// no mask yet; [`ReplaceMasks`] then writes the masks themselves.
struct AttachMasks<'a> {
    masks: &'a Masks,
    attached: &'a Masks,
}

impl Reparameterizer for AttachMasks<'_> {
    type Reparam = WeightReparam;

    fn reparameterize<const D: usize>(
        &mut self,
        path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<WeightReparam>) {
        match self.masks.get(path) {
            Some(mask) if !self.attached.contains_key(path) => {
                let keep = Param::initialized(ParamId::new(), mask.clone());
                (param, Some(WeightReparam { keep: Some(keep) }))
            }
            _ => (param, None),
        }
    }
}

/// The path of the float parameter that owns a keep mask at `path` (`fc.weight.ember.keep`).
fn owner_path(path: &[String]) -> Option<String> {
    match path {
        [owner @ .., reparam, keep] if reparam == WeightReparam::NAME && keep == "keep" => {
            Some(owner.join("."))
        }
        _ => None,
    }
}

struct ReplaceMasks<'a> {
    masks: &'a Masks,
    path: Vec<String>,
}

impl ModuleMapper for ReplaceMasks<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<D, Bool>>,
    ) -> Param<Tensor<D, Bool>> {
        match owner_path(&self.path).and_then(|owner| self.masks.get(&owner)) {
            Some(mask) if D == 1 => {
                let [len] = mask.dims();
                let dims: [usize; D] = std::array::from_fn(|_| len);
                param.map(|_| mask.clone().reshape(dims))
            }
            _ => param,
        }
    }
}

#[derive(Default)]
struct MaskReader {
    path: Vec<String>,
    found: Masks,
}

impl ModuleVisitor for MaskReader {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        if let Some(owner) = owner_path(&self.path) {
            self.found.insert(owner, param.val().flatten(0, D - 1));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    fn keep(values: &[bool], device: &Device) -> Tensor<1, Bool> {
        Tensor::from_data(TensorData::from(values), device)
    }

    #[test]
    fn a_mask_zeroes_the_effective_weight_and_reads_back() {
        // Initializing draws from the flex RNG that seeded tests in this binary share.
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex();
        let linear: Linear = LinearConfig::new(2, 2).init(&device);
        let base: Vec<f32> = linear.weight.val().into_data().try_into_vec().unwrap();
        let mut masks = Masks::new();
        masks.insert("weight".into(), keep(&[true, false, false, true], &device));
        let masked = set_masks(linear, &masks).unwrap();
        let effective: Vec<f32> = masked.weight.val().into_data().try_into_vec().unwrap();
        assert_eq!(effective, vec![base[0], 0.0, 0.0, base[3]]);

        let read = super::masks(&masked);
        assert_eq!(read.keys().collect::<Vec<_>>(), vec!["weight"]);
        let flags: Vec<bool> = read["weight"].clone().into_data().try_into_vec().unwrap();
        assert_eq!(flags, vec![true, false, false, true]);

        // Replacing the mask keeps one reparameterization, with the new flags.
        masks.insert("weight".into(), keep(&[false, false, false, true], &device));
        let masked = set_masks(masked, &masks).unwrap();
        let effective: Vec<f32> = masked.weight.val().into_data().try_into_vec().unwrap();
        assert_eq!(effective, vec![0.0, 0.0, 0.0, base[3]]);

        let stripped = strip(masked);
        assert!(super::masks(&stripped).is_empty());
        let plain: Vec<f32> = stripped.weight.val().into_data().try_into_vec().unwrap();
        assert_eq!(plain, vec![0.0, 0.0, 0.0, base[3]]);
    }

    #[test]
    fn bad_masks_are_typed_errors() {
        let _seeded = crate::testing::seeded_lock();
        let device = Device::flex();
        let linear: Linear = LinearConfig::new(2, 2).init(&device);
        let mut masks = Masks::new();
        masks.insert("weight".into(), keep(&[true; 3], &device));
        assert!(matches!(
            set_masks(linear.clone(), &masks),
            Err(Error::MaskShape { actual: 3, .. })
        ));
        let mut masks = Masks::new();
        masks.insert("nope".into(), keep(&[true; 4], &device));
        assert!(matches!(
            set_masks(linear, &masks),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
