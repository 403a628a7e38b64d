//! The optimizer's state through surgery, so that training goes on where it stopped.
//!
//! burn keeps an optimizer's state per parameter, keyed by [`ParamId`](burn::module::ParamId),
//! in tensors of the parameter's own shape (Adam's two moments, SGD's velocity). The pruned
//! model is a new module with new ids and smaller parameters: a state saved from the dense
//! model would be dropped, or refused, by the pruned one, and fine-tuning would start Adam
//! afresh (its first steps then move every weight by about the learning rate, whatever its
//! gradient). [`shrink_optimizer_state`] cuts each state tensor exactly as [`shrink`] cuts its
//! parameter and files it under the pruned parameter's id.
//!
//! burn's [`OptimizerRecord`] keeps its tensors private; its burnpack bytes are the public
//! form, so the state is read and rewritten through them.
//!
//! [`shrink`]: super::shrink

use std::collections::BTreeMap;

use burn::module::Module;
use burn::optim::OptimizerRecord;
use burn::tensor::Bytes;
use burn_pack::{Reader, Writer};
use ember_tensor::{UnitGroup, UnitSlice, params};

use super::{Kept, gather, group_error, kept_units};
use crate::{Error, Result};

/// The optimizer state `record` of `model`, cut to `pruned`, the model [`shrink`] made from it
/// with the same `groups` and `keep`: every state tensor shaped like its parameter loses the
/// removed units' slices, and every entry moves to the pruned parameter's id. Load it into the
/// optimizer with `ModuleOptimizer::load_record` and train `pruned` on.
///
/// Scalars (Adam's step count) carry over. A state tensor of another shape (Adafactor's
/// factored moments) cannot be cut unit by unit and is an error, as is a record that holds
/// state for a parameter `model` does not have (a record of another model, or of the pruned
/// one already).
///
/// ```
/// use burn::module::Module;
/// use burn::optim::{AdamConfig, GradientsParams};
/// use burn::tensor::{Device, Tensor};
/// use ember_prune::{StructuredConfig, UnitCriterion, select_units, shrink, shrink_optimizer_state};
/// use ember_zoo::{Classifier, MlpConfig};
///
/// let device = Device::flex().autodiff();
/// let config = MlpConfig { hidden: vec![6], ..MlpConfig::lenet_300_100(8, 3) };
/// let mut dense = config.init(&device)?;
/// let mut optimizer = AdamConfig::new().init();
/// let images = Tensor::<4>::ones([4, 1, 2, 4], &device);
/// let grads = GradientsParams::from_grads(dense.forward(images).sum().backward(), &dense);
/// dense = optimizer.step(1e-3, dense, grads);
///
/// let groups = config.unit_groups("");
/// let kept = select_units(&dense, &groups, &StructuredConfig::new(UnitCriterion::L2, 0.5))?;
/// let small = shrink(&dense, &groups, &kept, config.with_kept("", &kept).init(&device)?)?;
/// let state = shrink_optimizer_state(optimizer.to_record(), &dense, &groups, &kept, &small)?;
/// let optimizer = AdamConfig::new().init().load_record(state);
/// # let _ = optimizer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// [`shrink`]: super::shrink
pub fn shrink_optimizer_state<M: Module, S: Module>(
    record: OptimizerRecord,
    model: &M,
    groups: &[UnitGroup],
    keep: &Kept,
    pruned: &S,
) -> Result<OptimizerRecord> {
    let dense_params: BTreeMap<u64, (String, Vec<usize>)> = params(model)
        .into_iter()
        .map(|p| (p.id.val(), (p.path, p.shape)))
        .collect();
    let pruned_params: BTreeMap<String, (u64, Vec<usize>)> = params(pruned)
        .into_iter()
        .map(|p| (p.path, (p.id.val(), p.shape)))
        .collect();
    // Each parameter's cuts, in the order shrink makes them.
    let mut cuts: BTreeMap<&str, Vec<(&UnitSlice, &[usize])>> = BTreeMap::new();
    for group in groups {
        let units = kept_units(group, keep)?;
        for slice in group.slices() {
            cuts.entry(slice.path.as_str())
                .or_default()
                .push((slice, units));
        }
    }
    // The pruned model's id for each of the dense model's.
    let mut new_ids = BTreeMap::new();
    for (id, (path, _)) in &dense_params {
        if let Some((new_id, _)) = pruned_params.get(path) {
            new_ids.insert(*id, *new_id);
        }
    }

    let reader = Reader::from_bytes(record.into_bytes().map_err(state_error)?)
        .map_err(|e| state_error(e.to_string()))?;
    let scalars = reader.scalars().clone();
    let metadata = reader.metadata().clone();
    let mut tensors = vec![];
    for tensor in reader
        .into_tensors()
        .map_err(|e| state_error(e.to_string()))?
    {
        let (name, dtype, shape, param_id, bytes) = tensor
            .into_parts()
            .map_err(|e| state_error(e.to_string()))?;
        let Some(id) = param_id else {
            tensors.push(burn_pack::Tensor::new(name, dtype, shape, None, bytes));
            continue;
        };
        let (path, param_shape) = dense_params.get(&id).ok_or_else(|| {
            state_error(format!(
                "`{name}` is the state of parameter {id}, which the model does not have (a record of another model, or of the pruned one?)"
            ))
        })?;
        let (new_id, pruned_shape) = pruned_params
            .get(path)
            .ok_or_else(|| group_error(path, "the pruned model has no such parameter"))?;
        let mut shape = shape.to_vec();
        if &shape != param_shape {
            return Err(state_error(format!(
                "`{name}` has shape {shape:?}, not its parameter `{path}`'s {param_shape:?}: it cannot be cut unit by unit"
            )));
        }
        // The raw little-endian bytes, cut as elements of `dtype.size()` bytes each: a
        // trailing axis of that length makes `gather` move whole elements.
        let mut bytes = bytes.to_vec();
        for (slice, units) in cuts.get(path.as_str()).into_iter().flatten() {
            let mut byte_shape = shape.clone();
            byte_shape.push(dtype.size());
            bytes = gather(&byte_shape, &bytes, slice, units);
            shape[slice.axis] = units.len() * slice.block;
        }
        if &shape != pruned_shape {
            return Err(state_error(format!(
                "`{name}` cut to {shape:?} does not fit the pruned `{path}` of {pruned_shape:?}"
            )));
        }
        tensors.push(burn_pack::Tensor::new(
            renamed(&name, &new_ids),
            dtype,
            shape,
            Some(*new_id),
            Bytes::from_bytes_vec(bytes),
        ));
    }
    let mut writer = Writer::new(tensors);
    for (key, value) in &scalars {
        writer = writer.with_scalar(&renamed(key, &new_ids), *value);
    }
    for (key, value) in &metadata {
        writer = writer.with_metadata(&renamed(key, &new_ids), value);
    }
    let bytes = writer
        .into_bytes()
        .map_err(|e| state_error(e.to_string()))?;
    OptimizerRecord::from_bytes(bytes).map_err(state_error)
}

/// `name` (`"{param_id}"` or `"{param_id}.{field}"`, as burn's record keys its entries) under
/// the pruned parameter's id; other names unchanged.
fn renamed(name: &str, new_ids: &BTreeMap<u64, u64>) -> String {
    let (head, rest) = match name.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (name, None),
    };
    match head.parse::<u64>().ok().and_then(|id| new_ids.get(&id)) {
        Some(new_id) => match rest {
            Some(rest) => format!("{new_id}.{rest}"),
            None => new_id.to_string(),
        },
        None => name.to_string(),
    }
}

fn state_error(reason: impl ToString) -> Error {
    Error::OptimizerState(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_move_to_the_new_ids_and_others_stay() {
        let ids = BTreeMap::from([(7, 42)]);
        assert_eq!(renamed("7.momentum.moment_1", &ids), "42.momentum.moment_1");
        assert_eq!(renamed("7", &ids), "42");
        assert_eq!(renamed("8.moment", &ids), "8.moment");
        assert_eq!(renamed("lr", &ids), "lr");
    }
}
