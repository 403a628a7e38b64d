//! The captured graph written as an ONNX model (opset 13), quantized tensors as
//! `QuantizeLinear` / `DequantizeLinear` pairs.
//!
//! Each burn operation becomes one ONNX node, or a few (GELU through `Erf`, a fully connected
//! layer as `MatMul` and `Add`); an operation with no translation here is a typed
//! [`Error::Unsupported`] naming it. Tensors are named after the model's parameters
//! (`layers.0.weight`), `input` and `output`; intermediate ones after their capture id.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use burn::tensor::DType;
use burn_ir::{
    ActivationOperationIr, BaseOperationIr, FloatOperationIr, ModuleOperationIr,
    NumericOperationIr, OperationIr, ScalarIr, TensorId, TensorIr,
};
use ember_quant::{Granularity, InputQuant, Mode, QScheme, QTensor, QType};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto,
};

use crate::{Error, Result};
use ember_tensor::graph::{Capture, Captures, op_name};

/// The ONNX operator set the exporter writes: the first with per-axis `DequantizeLinear`.
pub const OPSET: i64 = 13;

/// The IR version that goes with [`OPSET`].
const IR_VERSION: i64 = 7;

/// How an integer tensor is turned back into floats: every quantized weight, and each
/// dynamically quantized input (its scale computed per batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DequantizeForm {
    /// Its integers through `DequantizeLinear` (with `axis` for per-channel scales): the QDQ
    /// form that ONNX Runtime, TensorRT and OpenVINO fold into integer kernels.
    #[default]
    DequantizeLinear,
    /// Its integers through `Cast`, `Sub` (the zero points, where any is not 0) and `Mul`
    /// (the scales, broadcast along the channel axis): the same values, for runtimes whose
    /// `DequantizeLinear` takes one constant scale only (tract 0.22 reads the first of a
    /// per-channel scale and ignores the rest, and refuses a computed one).
    CastAndScale,
}

/// Options of an export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// How quantized weights and dynamic inputs are dequantized.
    pub dequantize: DequantizeForm,
}

/// What quantization says about the captured model: the integers of its quantized
/// parameters and the quantizer of each quantized layer's input, by the path of the layer's
/// weight.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuantPlan {
    /// Quantized parameters by path.
    pub weights: HashMap<String, QTensor>,
    /// Input quantizers by the path of the weight of the layer that quantizes its input.
    pub inputs: HashMap<String, InputQuant>,
}

/// An exported ONNX model.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    proto: ModelProto,
}

impl OnnxModel {
    /// The model's protobuf message.
    pub fn proto(&self) -> &ModelProto {
        &self.proto
    }

    /// The operation types of its nodes, in order (`Conv`, `DequantizeLinear`, ...).
    pub fn op_types(&self) -> Vec<&str> {
        self.proto
            .graph
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect()
    }

    /// The encoded `.onnx` file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.proto
            .write_to_bytes()
            .map_err(|e| Error::Encode(e.to_string()))
    }

    /// Write the model to `path`, atomically (a failed write leaves any file there as it
    /// was). Returns the bytes written.
    pub fn save(&self, path: &Path) -> Result<u64> {
        let bytes = self.to_bytes()?;
        ember_tensor::fs::write_atomically(path, &bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(bytes.len() as u64)
    }
}

/// Translate the captured graph into an ONNX model.
pub(crate) fn build(
    captures: &Captures,
    plan: &QuantPlan,
    options: &ExportOptions,
    graph_name: &str,
) -> Result<OnnxModel> {
    let mut builder = Builder::new(captures, plan, options);
    for (a, b) in captures.main.ops.iter().zip(&captures.other.ops) {
        builder.operation(a, b)?;
    }
    builder.finish(graph_name)
}

struct Builder<'a> {
    main: &'a Capture,
    other: &'a Capture,
    plan: &'a QuantPlan,
    options: &'a ExportOptions,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Captured constants the nodes read, written as initializers at the end.
    constants: BTreeSet<TensorId>,
    /// Quantized weights already dequantized by a node.
    dequantized: HashSet<String>,
    /// Tensors that are a parameter reshaped or transposed: the parameter's path.
    views: HashMap<TensorId, String>,
    /// Float constants reshaped by the graph, written reshaped: the source, the new shape
    /// and the name.
    folded: HashMap<TensorId, (TensorId, Vec<usize>, String)>,
    fresh: usize,
}

impl<'a> Builder<'a> {
    fn new(captures: &'a Captures, plan: &'a QuantPlan, options: &'a ExportOptions) -> Self {
        Self {
            main: &captures.main,
            other: &captures.other,
            plan,
            options,
            nodes: Vec::new(),
            initializers: Vec::new(),
            constants: BTreeSet::new(),
            dequantized: HashSet::new(),
            views: HashMap::new(),
            folded: HashMap::new(),
            fresh: 0,
        }
    }

    /// The ONNX name of a captured tensor read by a node, the constants among them noted
    /// for the initializers (or dequantized, when quantized).
    fn read(&mut self, t: &TensorIr) -> Result<String> {
        let name = self.name(t);
        if self.folded.contains_key(&t.id) {
            self.constants.insert(t.id);
        } else if t.id != self.main.input.id && self.main.values.contains_key(&t.id) {
            if self.plan.weights.contains_key(&name) {
                self.dequantize_weight(&name)?;
            } else {
                self.constants.insert(t.id);
            }
        }
        Ok(name)
    }

    fn name(&self, t: &TensorIr) -> String {
        if t.id == self.main.input.id {
            "input".into()
        } else if t.id == self.main.output.id {
            "output".into()
        } else if let Some((_, _, name)) = self.folded.get(&t.id) {
            name.clone()
        } else {
            self.constant_name(t.id)
        }
    }

    fn constant_name(&self, id: TensorId) -> String {
        match self.main.names.get(&id) {
            Some(path) => path.clone(),
            None => format!("t{}", id.value()),
        }
    }

    /// Whether `t` is a float constant written as it is (not the input, not quantized).
    fn is_plain_constant(&self, t: &TensorIr) -> bool {
        t.id != self.main.input.id
            && self.main.values.contains_key(&t.id)
            && !self.plan.weights.contains_key(&self.constant_name(t.id))
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.fresh += 1;
        format!("{hint}:{}", self.fresh)
    }

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) {
        let mut node = NodeProto::new();
        node.op_type = op.into();
        node.name = format!("{op}_{}", self.nodes.len());
        node.input = inputs.iter().map(|s| s.to_string()).collect();
        node.output = outputs.iter().map(|s| s.to_string()).collect();
        node.attribute = attributes;
        self.nodes.push(node);
    }

    fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.initializers.push(tensor_f32(&name, &[], &[value]));
        name
    }

    fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("shape");
        self.initializers
            .push(tensor_i64(&name, &[values.len()], values));
        name
    }

    fn unary(&mut self, op: &str, input: &TensorIr, out: &TensorIr) -> Result<()> {
        let x = self.read(input)?;
        let y = self.name(out);
        self.node(op, &[&x], &[&y], vec![]);
        Ok(())
    }

    fn binary(&mut self, op: &str, lhs: &TensorIr, rhs: &TensorIr, out: &TensorIr) -> Result<()> {
        let a = self.read(lhs)?;
        let b = self.read(rhs)?;
        let y = self.name(out);
        self.node(op, &[&a, &b], &[&y], vec![]);
        Ok(())
    }

    fn with_scalar(
        &mut self,
        op: &str,
        lhs: &TensorIr,
        rhs: &ScalarIr,
        out: &TensorIr,
        what: &str,
    ) -> Result<()> {
        let a = self.read(lhs)?;
        let b = scalar_value(rhs, what).map(|v| self.scalar(v))?;
        let y = self.name(out);
        self.node(op, &[&a, &b], &[&y], vec![]);
        Ok(())
    }

    /// A shape for `Reshape`: the batch dimension (the one that differs between the two
    /// captures) as `-1`, or `0` (copy the input's) where the input has the batch there too.
    fn target_shape(&self, a: &burn_ir::ShapeOpIr, b: &burn_ir::ShapeOpIr) -> Result<Vec<i64>> {
        let out_batch = Captures::batch_axes(&a.out, &b.out);
        let in_batch = Captures::batch_axes(&a.input, &b.input);
        let mut inferred = false;
        let mut shape = Vec::new();
        for (i, (&dim, &batch)) in a.out.shape.iter().zip(&out_batch).enumerate() {
            if !batch {
                shape.push(dim as i64);
            } else if in_batch.get(i) == Some(&true) && a.input.shape.get(i) == Some(&dim) {
                shape.push(0);
            } else if !inferred {
                inferred = true;
                shape.push(-1);
            } else {
                return Err(Error::Unsupported {
                    op: "BaseFloat::Reshape".into(),
                    reason: format!(
                        "{:?} -> {:?} moves the batch into more than one axis",
                        a.input.shape, a.out.shape
                    ),
                });
            }
        }
        Ok(shape)
    }

    /// Follow a parameter through reshapes and transposes, so that the layer reading it is
    /// found.
    fn note_view(&mut self, input: &TensorIr, out: &TensorIr) {
        if let Some(path) = self.param_of(input) {
            self.views.insert(out.id, path);
        }
    }

    fn param_of(&self, t: &TensorIr) -> Option<String> {
        self.main
            .names
            .get(&t.id)
            .or_else(|| self.views.get(&t.id))
            .cloned()
    }

    /// The name a layer reads its activation under: quantized and dequantized again when the
    /// layer whose weight is `weight` quantizes its input.
    fn activation(&mut self, x: &TensorIr, weight: &TensorIr) -> Result<String> {
        let name = self.read(x)?;
        let Some(path) = self.param_of(weight) else {
            return Ok(name);
        };
        let quant = match self.plan.inputs.get(&path) {
            None | Some(InputQuant::Float) => return Ok(name),
            Some(quant) => quant.clone(),
        };
        let layer = path.strip_suffix(".weight").unwrap_or(&path).to_string();
        let what = format!("{layer} (its input)");
        let quantized = self.fresh(&format!("{name}:q"));
        let dequantized = self.fresh(&format!("{name}:dq"));
        match quant {
            InputQuant::Static { scheme, params } => {
                let zero_type = activation_type(&scheme, &what)?;
                let (Some(&scale), Some(&zero)) = (params.scale.first(), params.zero_point.first())
                else {
                    return Err(Error::Quantization {
                        what,
                        reason: "no scale".into(),
                    });
                };
                let s = self.scalar(scale);
                let z = self.fresh("zero_point");
                self.initializers
                    .push(int_tensor(&z, &[], &[zero], zero_type));
                self.node("QuantizeLinear", &[&name, &s, &z], &[&quantized], vec![]);
                self.node(
                    "DequantizeLinear",
                    &[&quantized, &s, &z],
                    &[&dequantized],
                    vec![],
                );
            }
            InputQuant::Dynamic(scheme) => {
                // ONNX's DynamicQuantizeLinear is uint8 affine over the batch's range with
                // zero inside, which is what Ember's dynamic uint8 quantizer computes.
                let dynamic = scheme.qtype == QType::UInt8
                    && scheme.mode == Mode::Affine
                    && scheme.width() == 8
                    && !scheme.reduce_range;
                if !dynamic {
                    return Err(Error::Quantization {
                        what,
                        reason: format!(
                            "ONNX's DynamicQuantizeLinear is 8-bit affine uint8, not {scheme:?}"
                        ),
                    });
                }
                let s = self.fresh("scale");
                let z = self.fresh("zero_point");
                self.node(
                    "DynamicQuantizeLinear",
                    &[&name],
                    &[&quantized, &s, &z],
                    vec![],
                );
                match self.options.dequantize {
                    DequantizeForm::DequantizeLinear => {
                        let inputs = [quantized.as_str(), &s, &z];
                        self.node("DequantizeLinear", &inputs, &[&dequantized], vec![]);
                    }
                    DequantizeForm::CastAndScale => {
                        let to_float = || vec![attr_int("to", DataType::FLOAT as i64)];
                        let [qf, zf, centred] = ["q", "z", "centred"].map(|h| self.fresh(h));
                        self.node("Cast", &[&quantized], &[&qf], to_float());
                        self.node("Cast", &[&z], &[&zf], to_float());
                        self.node("Sub", &[&qf, &zf], &[&centred], vec![]);
                        self.node("Mul", &[&centred, &s], &[&dequantized], vec![]);
                    }
                }
            }
            other => {
                return Err(Error::Quantization {
                    what,
                    reason: format!(
                        "the layer is `{}`: only converted (static or dynamic) layers export",
                        other.name()
                    ),
                });
            }
        }
        Ok(dequantized)
    }

    /// Write a quantized weight's integers and the nodes that give its float values back,
    /// under the weight's own name.
    fn dequantize_weight(&mut self, path: &str) -> Result<()> {
        if !self.dequantized.insert(path.to_string()) {
            return Ok(());
        }
        let Some(q) = self.plan.weights.get(path) else {
            return Ok(());
        };
        let scheme = q.scheme();
        let axis = match scheme.granularity {
            Granularity::PerTensor => None,
            Granularity::PerChannel { axis } => Some(axis),
            other => {
                return Err(Error::Quantization {
                    what: path.into(),
                    reason: format!(
                        "{other:?} scales need opset 21's blocked DequantizeLinear; export \
                         per-tensor or per-channel weights"
                    ),
                });
            }
        };
        let dtype = if scheme.qtype.signed() {
            DataType::INT8
        } else {
            DataType::UINT8
        };
        let shape = q.shape().to_vec();
        let params = q.params();
        let ints = format!("{path}:q");
        self.initializers
            .push(int_tensor(&ints, &shape, &q.values(), dtype));
        let count = params.scale.len();
        match self.options.dequantize {
            DequantizeForm::DequantizeLinear => {
                let dims: Vec<usize> = if axis.is_some() { vec![count] } else { vec![] };
                let scale = format!("{path}:scale");
                self.initializers
                    .push(tensor_f32(&scale, &dims, &params.scale));
                let mut inputs = vec![ints.clone(), scale];
                // A zero point of 0 is DequantizeLinear's default: symmetric weights store none.
                if params.zero_point.iter().any(|&z| z != 0) {
                    let zero = format!("{path}:zero_point");
                    self.initializers
                        .push(int_tensor(&zero, &dims, &params.zero_point, dtype));
                    inputs.push(zero);
                }
                let attributes = axis
                    .map(|a| vec![attr_int("axis", a as i64)])
                    .unwrap_or_default();
                let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                self.node("DequantizeLinear", &inputs, &[path], attributes);
            }
            DequantizeForm::CastAndScale => {
                let mut dims = vec![1; shape.len()];
                if let Some(a) = axis {
                    dims[a] = count;
                }
                let dims = if axis.is_some() { dims } else { vec![] };
                let float = format!("{path}:float");
                self.node(
                    "Cast",
                    &[&ints],
                    &[&float],
                    vec![attr_int("to", DataType::FLOAT as i64)],
                );
                let mut centred = float;
                if params.zero_point.iter().any(|&z| z != 0) {
                    let zero = format!("{path}:zero_point");
                    let zeros: Vec<f32> = params.zero_point.iter().map(|&z| z as f32).collect();
                    self.initializers.push(tensor_f32(&zero, &dims, &zeros));
                    let out = format!("{path}:centred");
                    self.node("Sub", &[&centred, &zero], &[&out], vec![]);
                    centred = out;
                }
                let scale = format!("{path}:scale");
                self.initializers
                    .push(tensor_f32(&scale, &dims, &params.scale));
                self.node("Mul", &[&centred, &scale], &[path], vec![]);
            }
        }
        Ok(())
    }

    fn unsupported(op: &OperationIr, reason: &str) -> Error {
        Error::Unsupported {
            op: op_name(op),
            reason: reason.into(),
        }
    }

    fn operation(&mut self, a: &OperationIr, b: &OperationIr) -> Result<()> {
        use ActivationOperationIr as Act;
        use BaseOperationIr as Base;
        use FloatOperationIr as F;
        use ModuleOperationIr as Mod;
        use NumericOperationIr as Num;
        match (a, b) {
            (
                OperationIr::BaseFloat(Base::Reshape(s)),
                OperationIr::BaseFloat(Base::Reshape(o)),
            ) => {
                if self.is_plain_constant(&s.input) {
                    // A bias reshaped to broadcast: written in its new shape.
                    let dims = s.out.shape.to_vec();
                    let shape: Vec<String> = dims.iter().map(usize::to_string).collect();
                    let name = format!("{}:{}", self.constant_name(s.input.id), shape.join("x"));
                    self.folded.insert(s.out.id, (s.input.id, dims, name));
                    return Ok(());
                }
                let shape = self.target_shape(s, o)?;
                let x = self.read(&s.input)?;
                let target = self.ints(&shape);
                let y = self.name(&s.out);
                self.node("Reshape", &[&x, &target], &[&y], vec![]);
                self.note_view(&s.input, &s.out);
            }
            (OperationIr::BaseFloat(Base::SwapDims(s)), _) => {
                let mut perm: Vec<i64> = (0..s.input.shape.len() as i64).collect();
                perm.swap(s.dim1, s.dim2);
                let x = self.read(&s.input)?;
                let y = self.name(&s.out);
                self.node("Transpose", &[&x], &[&y], vec![attr_ints("perm", &perm)]);
                self.note_view(&s.input, &s.out);
            }
            (OperationIr::BaseFloat(Base::Permute(p)), _) => {
                let perm: Vec<i64> = p.axes.iter().map(|&a| a as i64).collect();
                let x = self.read(&p.input)?;
                let y = self.name(&p.out);
                self.node("Transpose", &[&x], &[&y], vec![attr_ints("perm", &perm)]);
                self.note_view(&p.input, &p.out);
            }
            (OperationIr::BaseFloat(Base::Cat(c)), _) => {
                let mut inputs = Vec::new();
                for t in &c.tensors {
                    inputs.push(self.read(t)?);
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let y = self.name(&c.out);
                self.node("Concat", &refs, &[&y], vec![attr_int("axis", c.dim as i64)]);
            }
            (OperationIr::NumericFloat(_, n), _) => match n {
                Num::Add(o) => self.binary("Add", &o.lhs, &o.rhs, &o.out)?,
                Num::Sub(o) => self.binary("Sub", &o.lhs, &o.rhs, &o.out)?,
                Num::Mul(o) => self.binary("Mul", &o.lhs, &o.rhs, &o.out)?,
                Num::Div(o) => self.binary("Div", &o.lhs, &o.rhs, &o.out)?,
                Num::AddScalar(o) => self.with_scalar("Add", &o.lhs, &o.rhs, &o.out, "add")?,
                Num::SubScalar(o) => self.with_scalar("Sub", &o.lhs, &o.rhs, &o.out, "sub")?,
                Num::MulScalar(o) => self.with_scalar("Mul", &o.lhs, &o.rhs, &o.out, "mul")?,
                Num::DivScalar(o) => self.with_scalar("Div", &o.lhs, &o.rhs, &o.out, "div")?,
                Num::ClampMin(o) => self.with_scalar("Max", &o.lhs, &o.rhs, &o.out, "clamp")?,
                Num::ClampMax(o) => self.with_scalar("Min", &o.lhs, &o.rhs, &o.out, "clamp")?,
                Num::Abs(o) => self.unary("Abs", &o.input, &o.out)?,
                Num::Clamp(c) => {
                    let x = self.read(&c.tensor)?;
                    let min = self.scalar(scalar_value(&c.min, "clamp")?);
                    let max = self.scalar(scalar_value(&c.max, "clamp")?);
                    let y = self.name(&c.out);
                    self.node("Clip", &[&x, &min, &max], &[&y], vec![]);
                }
                Num::MeanDim(r) | Num::MaxDim(r) | Num::MinDim(r) => {
                    let op = match n {
                        Num::MeanDim(_) => "ReduceMean",
                        Num::MaxDim(_) => "ReduceMax",
                        _ => "ReduceMin",
                    };
                    let x = self.read(&r.input)?;
                    let y = self.name(&r.out);
                    let attributes =
                        vec![attr_ints("axes", &[r.axis as i64]), attr_int("keepdims", 1)];
                    self.node(op, &[&x], &[&y], attributes);
                }
                Num::SumDim(r) => {
                    let x = self.read(&r.input)?;
                    let axes = self.ints(&[r.axis as i64]);
                    let y = self.name(&r.out);
                    self.node(
                        "ReduceSum",
                        &[&x, &axes],
                        &[&y],
                        vec![attr_int("keepdims", 1)],
                    );
                }
                _ => return Err(Self::unsupported(a, "no ONNX translation in ember-export")),
            },
            (OperationIr::Float(_, f), _) => match f {
                F::Exp(o) => self.unary("Exp", &o.input, &o.out)?,
                F::Log(o) => self.unary("Log", &o.input, &o.out)?,
                F::Sqrt(o) => self.unary("Sqrt", &o.input, &o.out)?,
                F::Tanh(o) => self.unary("Tanh", &o.input, &o.out)?,
                F::Erf(o) => self.unary("Erf", &o.input, &o.out)?,
                F::Sin(o) => self.unary("Sin", &o.input, &o.out)?,
                F::Cos(o) => self.unary("Cos", &o.input, &o.out)?,
                F::Recip(o) => self.unary("Reciprocal", &o.input, &o.out)?,
                F::Round(o) => self.unary("Round", &o.input, &o.out)?,
                F::Floor(o) => self.unary("Floor", &o.input, &o.out)?,
                F::Ceil(o) => self.unary("Ceil", &o.input, &o.out)?,
                F::PowfScalar(o) => self.with_scalar("Pow", &o.lhs, &o.rhs, &o.out, "pow")?,
                F::Matmul(m) => {
                    // Whichever side is a layer's weight, the other is its activation.
                    let (lhs, rhs) = if self.param_of(&m.rhs).is_some() {
                        (self.activation(&m.lhs, &m.rhs)?, self.read(&m.rhs)?)
                    } else if self.param_of(&m.lhs).is_some() {
                        (self.read(&m.lhs)?, self.activation(&m.rhs, &m.lhs)?)
                    } else {
                        (self.read(&m.lhs)?, self.read(&m.rhs)?)
                    };
                    let y = self.name(&m.out);
                    self.node("MatMul", &[&lhs, &rhs], &[&y], vec![]);
                }
                _ => return Err(Self::unsupported(a, "no ONNX translation in ember-export")),
            },
            (OperationIr::Activation(act), _) => match act {
                Act::Relu(o) => self.unary("Relu", &o.input, &o.out)?,
                Act::Sigmoid(o) => self.unary("Sigmoid", &o.input, &o.out)?,
                Act::Softmax(d) | Act::LogSoftmax(d) => {
                    let op = if matches!(act, Act::Softmax(_)) {
                        "Softmax"
                    } else {
                        "LogSoftmax"
                    };
                    let x = self.read(&d.input)?;
                    let y = self.name(&d.out);
                    self.node(op, &[&x], &[&y], vec![attr_int("axis", d.axis as i64)]);
                }
                Act::LeakyRelu(s) => {
                    let x = self.read(&s.lhs)?;
                    let y = self.name(&s.out);
                    let alpha = scalar_value(&s.rhs, "leaky_relu")?;
                    self.node("LeakyRelu", &[&x], &[&y], vec![attr_float("alpha", alpha)]);
                }
                Act::Gelu(o) => {
                    // burn's GELU is the exact one: x · (1 + erf(x / √2)) / 2.
                    let x = self.read(&o.input)?;
                    let root = self.scalar(std::f32::consts::SQRT_2);
                    let one = self.scalar(1.0);
                    let half = self.scalar(0.5);
                    let [scaled, erf, shifted, product] =
                        ["gelu", "gelu", "gelu", "gelu"].map(|h| self.fresh(h));
                    self.node("Div", &[&x, &root], &[&scaled], vec![]);
                    self.node("Erf", &[&scaled], &[&erf], vec![]);
                    self.node("Add", &[&erf, &one], &[&shifted], vec![]);
                    self.node("Mul", &[&x, &shifted], &[&product], vec![]);
                    let y = self.name(&o.out);
                    self.node("Mul", &[&product, &half], &[&y], vec![]);
                }
                _ => return Err(Self::unsupported(a, "no ONNX translation in ember-export")),
            },
            (OperationIr::Module(m), _) => match m {
                Mod::Conv2d(c) => {
                    let x = self.activation(&c.x, &c.weight)?;
                    let w = self.read(&c.weight)?;
                    let mut inputs = vec![x, w];
                    if let Some(bias) = &c.bias {
                        inputs.push(self.read(bias)?);
                    }
                    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                    let o = &c.options;
                    let [kh, kw] = [c.weight.shape[2], c.weight.shape[3]];
                    let attributes = vec![
                        attr_ints("kernel_shape", &[kh as i64, kw as i64]),
                        attr_ints("strides", &usizes(&o.stride)),
                        attr_ints("dilations", &usizes(&o.dilation)),
                        attr_ints(
                            "pads",
                            &usizes(&[
                                o.padding[0].0,
                                o.padding[1].0,
                                o.padding[0].1,
                                o.padding[1].1,
                            ]),
                        ),
                        attr_int("group", o.groups as i64),
                    ];
                    let y = self.name(&c.out);
                    self.node("Conv", &refs, &[&y], attributes);
                }
                Mod::Linear(l) => {
                    let x = self.activation(&l.x, &l.weight)?;
                    let w = self.read(&l.weight)?;
                    let y = self.name(&l.out);
                    match &l.bias {
                        None => self.node("MatMul", &[&x, &w], &[&y], vec![]),
                        Some(bias) => {
                            let b = self.read(bias)?;
                            let product = self.fresh("linear");
                            self.node("MatMul", &[&x, &w], &[&product], vec![]);
                            self.node("Add", &[&product, &b], &[&y], vec![]);
                        }
                    }
                }
                Mod::MaxPool2d(p) => {
                    let x = self.read(&p.x)?;
                    let y = self.name(&p.out);
                    let [ph, pw] = p.padding;
                    let attributes = vec![
                        attr_ints("kernel_shape", &usizes(&p.kernel_size)),
                        attr_ints("strides", &usizes(&p.stride)),
                        attr_ints("dilations", &usizes(&p.dilation)),
                        attr_ints("pads", &usizes(&[ph, pw, ph, pw])),
                        attr_int("ceil_mode", p.ceil_mode as i64),
                    ];
                    self.node("MaxPool", &[&x], &[&y], attributes);
                }
                Mod::AvgPool2d(p) => {
                    let x = self.read(&p.x)?;
                    let y = self.name(&p.out);
                    let [ph, pw] = p.padding;
                    let attributes = vec![
                        attr_ints("kernel_shape", &usizes(&p.kernel_size)),
                        attr_ints("strides", &usizes(&p.stride)),
                        attr_ints("pads", &usizes(&[ph, pw, ph, pw])),
                        attr_int("ceil_mode", p.ceil_mode as i64),
                        attr_int("count_include_pad", p.count_include_pad as i64),
                    ];
                    self.node("AveragePool", &[&x], &[&y], attributes);
                }
                Mod::AdaptiveAvgPool2d(p) if p.output_size == [1, 1] => {
                    self.unary("GlobalAveragePool", &p.x, &p.out)?;
                }
                Mod::BatchNorm(n) => {
                    let mut inputs = Vec::new();
                    for t in [&n.x, &n.gamma, &n.beta, &n.mean, &n.variance] {
                        inputs.push(self.read(t)?);
                    }
                    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                    let epsilon = scalar_value(&n.epsilon, "batch_norm")?;
                    let y = self.name(&n.out);
                    self.node(
                        "BatchNormalization",
                        &refs,
                        &[&y],
                        vec![attr_float("epsilon", epsilon)],
                    );
                }
                _ => return Err(Self::unsupported(a, "no ONNX translation in ember-export")),
            },
            _ => return Err(Self::unsupported(a, "no ONNX translation in ember-export")),
        }
        Ok(())
    }

    /// Drop the nodes the output does not need, write the constants the rest read, and
    /// declare the input and output with a symbolic batch.
    fn finish(mut self, graph_name: &str) -> Result<OnnxModel> {
        let mut needed: HashSet<String> = HashSet::from(["output".to_string()]);
        let mut kept = Vec::new();
        for node in std::mem::take(&mut self.nodes).into_iter().rev() {
            if node.output.iter().any(|o| needed.contains(o)) {
                needed.extend(node.input.iter().cloned());
                kept.push(node);
            }
        }
        kept.reverse();
        if !needed.contains("input") {
            return Err(Error::Capture(
                "the output does not depend on the input".into(),
            ));
        }
        let mut initializers: Vec<TensorProto> = std::mem::take(&mut self.initializers)
            .into_iter()
            .filter(|t| needed.contains(&t.name))
            .collect();
        for id in &self.constants {
            // A folded constant is its source's values in the reshaped shape.
            let (source, name, reshaped) = match self.folded.get(id) {
                Some((source, shape, name)) => (*source, name.clone(), Some(shape.clone())),
                None => (*id, self.constant_name(*id), None),
            };
            let Some(data) = self.main.values.get(&source) else {
                continue;
            };
            if !needed.contains(&name) {
                continue;
            }
            let shape = reshaped.unwrap_or_else(|| data.shape().to_vec());
            let tensor = match data.dtype() {
                DType::F32 => {
                    let values = data.as_slice::<f32>().map_err(|e| Error::Dtype {
                        what: name.clone(),
                        dtype: format!("{e:?}"),
                    })?;
                    tensor_f32(&name, &shape, values)
                }
                other => {
                    return Err(Error::Dtype {
                        what: name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            initializers.push(tensor);
        }
        let input = value_info("input", &self.main.input, &self.other.input);
        let output = value_info("output", &self.main.output, &self.other.output);
        let mut graph = GraphProto::new();
        graph.name = graph_name.into();
        graph.node = kept;
        graph.initializer = initializers;
        graph.input = vec![input];
        graph.output = vec![output];
        let mut model = ModelProto::new();
        model.ir_version = IR_VERSION;
        model.producer_name = "ember".into();
        model.producer_version = env!("CARGO_PKG_VERSION").into();
        let mut opset = OperatorSetIdProto::new();
        opset.version = OPSET;
        model.opset_import = vec![opset];
        let mut format = StringStringEntryProto::new();
        format.key = "producer".into();
        format.value = "ember-export: burn's captured graph".into();
        model.metadata_props = vec![format];
        model.graph = Some(graph).into();
        Ok(OnnxModel { proto: model })
    }
}

/// The input's integer type in ONNX, for an 8-bit per-tensor scheme.
fn activation_type(scheme: &QScheme, what: &str) -> Result<DataType> {
    if scheme.width() != 8 {
        return Err(Error::Quantization {
            what: what.into(),
            reason: format!(
                "a {}-bit input has no QuantizeLinear form (it saturates at 8 bits)",
                scheme.width()
            ),
        });
    }
    if !matches!(scheme.granularity, Granularity::PerTensor) {
        return Err(Error::Quantization {
            what: what.into(),
            reason: "an input has one scale in ONNX's QuantizeLinear".into(),
        });
    }
    Ok(match scheme.qtype {
        QType::Int8 => DataType::INT8,
        QType::UInt8 => DataType::UINT8,
        other => {
            return Err(Error::Quantization {
                what: what.into(),
                reason: format!("{other:?} inputs have no QuantizeLinear form"),
            });
        }
    })
}

fn scalar_value(scalar: &ScalarIr, what: &str) -> Result<f32> {
    match scalar {
        ScalarIr::Float(v) => Ok(*v as f32),
        ScalarIr::Int(v) => Ok(*v as f32),
        ScalarIr::UInt(v) => Ok(*v as f32),
        ScalarIr::Bool(_) => Err(Error::Unsupported {
            op: what.into(),
            reason: "a boolean scalar".into(),
        }),
    }
}

fn usizes(values: &[usize]) -> Vec<i64> {
    values.iter().map(|&v| v as i64).collect()
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = value;
    a
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = values.to_vec();
    a
}

fn attr_float(name: &str, value: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = value;
    a
}

fn tensor_f32(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = DataType::FLOAT as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

fn tensor_i64(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = DataType::INT64 as i32;
    t.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

/// Integers of an 8-bit type (a narrower width's values fit in it), one byte each.
fn int_tensor(name: &str, dims: &[usize], values: &[i32], dtype: DataType) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    t.data_type = dtype as i32;
    // Every value of an 8-bit-or-narrower scheme fits its byte; `as` keeps the bit pattern.
    t.raw_data = values.iter().map(|&v| v as u8).collect();
    t
}

/// A graph input or output: float, its batch axis (where the captures differ) symbolic.
fn value_info(name: &str, a: &TensorIr, b: &TensorIr) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for (&dim, batch) in a.shape.iter().zip(Captures::batch_axes(a, b)) {
        let mut d = tensor_shape_proto::Dimension::new();
        d.value = Some(if batch {
            tensor_shape_proto::dimension::Value::DimParam("batch".into())
        } else {
            tensor_shape_proto::dimension::Value::DimValue(dim as i64)
        });
        shape.dim.push(d);
    }
    let mut tensor = type_proto::Tensor::new();
    tensor.elem_type = DataType::FLOAT as i32;
    tensor.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(tensor));
    let mut info = ValueInfoProto::new();
    info.name = name.into();
    info.type_ = Some(ty).into();
    info
}
