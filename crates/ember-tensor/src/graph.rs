//! A model's forward pass as a graph: recorded by burn's capture backend, at two batch sizes.
//!
//! Exporters (`ember-export`) translate it; structured pruning finds its dependency groups in
//! it and quantization its conv -> batch-norm pairs, so that a user's model needs no hand-written
//! wiring.
//!
//! The capture backend records operations without running them: the graph holds every
//! operation with its tensors' shapes, and the model's weights as initialized values. A graph
//! records one batch size; capturing twice, at [`BATCH_SIZES`], tells the batch axis (the
//! dimensions that differ) from the fixed ones, so that the exported model takes any batch.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Device, Tensor, TensorData};
use burn_capture::CaptureBackend;
use burn_ir::{OperationIr, TensorId, TensorIr};

use crate::{Error, Result};

pub use burn_ir;

/// The two batch sizes the forward pass is captured at. Neither is 1, so that a dimension of
/// one that broadcasts is never mistaken for the batch.
pub const BATCH_SIZES: [usize; 2] = [2, 3];

/// One recorded forward pass.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The operations, in the order they ran.
    pub ops: Vec<OperationIr>,
    /// The initialized tensors: the model's parameters and buffers, the input, constants.
    pub values: BTreeMap<TensorId, TensorData>,
    /// The runtime input.
    pub input: TensorIr,
    /// The output.
    pub output: TensorIr,
    /// The model's float parameters by tensor, as dotted paths (`layers.0.weight`).
    pub names: HashMap<TensorId, String>,
}

/// The same forward pass captured at both [`BATCH_SIZES`], checked to be the same graph.
#[derive(Debug, Clone)]
pub struct Captures {
    /// At the first batch size: the graph that is exported.
    pub main: Capture,
    /// At the second: consulted for which dimensions follow the batch.
    pub other: Capture,
}

impl Captures {
    /// Capture `forward` of `model` for inputs of `shape` (its first axis the batch, whatever
    /// its value) at both batch sizes.
    pub fn new<M, F, const D: usize, const E: usize>(
        model: &M,
        shape: [usize; D],
        forward: F,
    ) -> Result<Self>
    where
        M: Module,
        F: Fn(&M, Tensor<D>) -> Tensor<E>,
    {
        let [first, second] = BATCH_SIZES;
        let main = capture(model, with_batch(shape, first), &forward)?;
        let other = capture(model, with_batch(shape, second), &forward)?;
        let mismatch = |what: String| Error::BatchDependent {
            batches: BATCH_SIZES,
            what,
        };
        let (a, b) = (computations(&main), computations(&other));
        if a.len() != b.len() {
            return Err(mismatch(format!(
                "{} operations against {}",
                a.len(),
                b.len()
            )));
        }
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let (nx, ny) = (op_name(x), op_name(y));
            if nx != ny {
                return Err(mismatch(format!("operation {i} is `{nx}` against `{ny}`")));
            }
            for (u, v) in x.inputs().zip(y.inputs()) {
                let constant = u.id != main.input.id && main.values.contains_key(&u.id);
                if constant && u.shape != v.shape {
                    return Err(mismatch(format!(
                        "`{nx}` reads a constant of shape {:?} that follows the batch",
                        u.shape
                    )));
                }
            }
        }
        let main = Capture { ops: a, ..main };
        let other = Capture { ops: b, ..other };
        Ok(Self { main, other })
    }

    /// For each dimension of a tensor (`a` in the first capture, `b` the same tensor in the
    /// second), whether it follows the batch.
    pub fn batch_axes(a: &TensorIr, b: &TensorIr) -> Vec<bool> {
        a.shape
            .iter()
            .zip(b.shape.iter())
            .map(|(x, y)| x != y)
            .collect()
    }
}

/// The operations that compute: tensors' creation and release are left out (constants are
/// looked up in the captured values; a module's buffers moved in an earlier capture are
/// not created again).
fn computations(capture: &Capture) -> Vec<OperationIr> {
    capture
        .ops
        .iter()
        .filter(|op| !matches!(op, OperationIr::Init(_) | OperationIr::Drop(_)))
        .cloned()
        .collect()
}

fn with_batch<const D: usize>(mut shape: [usize; D], batch: usize) -> [usize; D] {
    if D > 0 {
        shape[0] = batch;
    }
    shape
}

/// Record one forward pass on a fresh capture device.
fn capture<M, F, const D: usize, const E: usize>(
    model: &M,
    shape: [usize; D],
    forward: &F,
) -> Result<Capture>
where
    M: Module,
    F: Fn(&M, Tensor<D>) -> Tensor<E>,
{
    let device = Device::capture();
    let saved = SharedState::save(model);
    let mut boundary = None;
    let mut names = HashMap::new();
    // A forward pass that reads a tensor's values (`into_data`) cannot be captured: burn's
    // capture backend panics there, and the exporter reports it as an error.
    let recorded = catch_unwind(AssertUnwindSafe(|| {
        device.capture_scope(|scope| {
            let on_device = model.clone().to_device(&device);
            let mut visitor = ParamNames::default();
            on_device.visit(&mut visitor);
            names = visitor.found;
            let input = Tensor::<D>::from_data(TensorData::zeros::<f32, _>(shape), &device);
            let input_id = id_of(input.clone());
            let output = forward(&on_device, input);
            let output_id = id_of(output);
            boundary = Some((input_id, output_id));
            match (input_id, output_id) {
                (Some(i), Some(o)) => scope.complete([i], [o]),
                _ => scope.complete([], []),
            }
        })
    }));
    saved.restore(model);
    let graph = match recorded {
        Ok(Ok(graph)) => graph,
        Ok(Err(error)) => return Err(Error::Capture(error.to_string())),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            return Err(Error::Capture(format!(
                "the forward pass cannot run on a capture device ({message}); a forward pass \
                 that reads tensor values on the host cannot be exported"
            )));
        }
    };
    let Some((Some(input), Some(output))) = boundary else {
        return Err(Error::Capture(
            "the input or the output is not a capture tensor".into(),
        ));
    };
    let find = |id: TensorId| {
        graph
            .graph
            .operations
            .iter()
            .flat_map(OperationIr::nodes)
            .find(|t| t.id == id)
            .cloned()
    };
    let (Some(input), Some(output)) = (find(input), find(output)) else {
        return Err(Error::Capture(
            "the forward pass does not connect its input to its output".into(),
        ));
    };
    Ok(Capture {
        ops: graph.graph.operations,
        values: graph.values,
        input,
        output,
        names,
    })
}

fn id_of<const D: usize>(tensor: Tensor<D>) -> Option<TensorId> {
    tensor
        .try_into_primitive::<CaptureBackend>()
        .ok()
        .map(|primitive| primitive.id())
}

/// Every float parameter's tensor, by its dotted path.
#[derive(Default)]
struct ParamNames {
    path: Vec<String>,
    found: HashMap<TensorId, String>,
}

impl ModuleVisitor for ParamNames {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(id) = id_of(param.val()) {
            self.found.insert(id, self.path.join("."));
        }
    }
}

/// The values of a module's parameters and buffers before a capture.
///
/// burn's `RunningState` (a batch norm's running mean and variance) is shared by every clone
/// of a module, and `to_device` moves it in place: capturing a clone would leave the caller's
/// model with its statistics on the capture device, where nothing runs. Mapping a clone
/// writes through that sharing too, which is how [`SharedState::restore`] puts them back.
struct SharedState {
    values: HashMap<ParamId, (Tensor<1>, Vec<usize>)>,
}

impl SharedState {
    fn save<M: Module>(model: &M) -> Self {
        struct Save(HashMap<ParamId, (Tensor<1>, Vec<usize>)>);
        impl ModuleVisitor for Save {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let value = param.val();
                let shape = value.dims().to_vec();
                self.0.insert(param.id, (value.reshape([-1]), shape));
            }
        }
        let mut save = Save(HashMap::new());
        model.visit(&mut save);
        Self { values: save.0 }
    }

    fn restore<M: Module>(&self, model: &M) {
        struct Restore<'a>(&'a HashMap<ParamId, (Tensor<1>, Vec<usize>)>);
        impl ModuleMapper for Restore<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                match self.0.get(&param.id) {
                    Some((flat, shape)) if param.val().device() != flat.device() => {
                        let shape: [usize; D] = std::array::from_fn(|i| shape[i]);
                        param.map(|_| flat.clone().reshape(shape))
                    }
                    _ => param,
                }
            }
        }
        let _ = model.clone().map(&mut Restore(&self.values));
    }
}

/// The name of an operation as burn's IR spells it: `Module::Conv2d`, `BaseFloat::Reshape`.
pub fn op_name(op: &OperationIr) -> String {
    let debug = format!("{op:?}");
    let mut parts = debug.split('(');
    let outer = parts.next().unwrap_or_default();
    let inner = parts.next().unwrap_or_default();
    // `NumericFloat(F32, Add(...))`: the dtype comes first.
    let inner = inner.rsplit(", ").next().unwrap_or(inner);
    if inner.is_empty() || inner.starts_with(char::is_lowercase) {
        outer.to_string()
    } else {
        format!("{outer}::{inner}")
    }
}
