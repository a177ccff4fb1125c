//! Checkpoint → model blob: infer the architecture from tensor shapes, fold BatchNorm into
//! the convolutions, lay weights out input-major, and store them as f32, f16 or int8.

use std::collections::BTreeSet;

use crate::error::{Context, Error, OrFail, Result};
use crate::{fail, require};
use soft_core::format::{self, Dtype, TensorId, TensorKind as K, TensorSpec};
use soft_core::schema::{self, Key, Layout, Shape};
use soft_core::ModelConfig;
use soft_kernels::rng::XorShift64;

use crate::checkpoint::{HostTensor, TensorMap};

/// What the tensor shapes cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchOptions {
    /// SOFT-Norm attention.
    pub normalized: bool,
    /// Newton–Schulz iterations.
    pub newton_iters: usize,
    /// Stage-4 heads; default: stage-4 width / stage-3 head dim.
    pub stage4_heads: Option<usize>,
}

impl Default for ArchOptions {
    fn default() -> Self {
        ArchOptions {
            normalized: false,
            newton_iters: 20,
            stage4_heads: None,
        }
    }
}

/// Storage type of the weight matrices in the blob (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightDtype {
    /// Everything f32.
    F32,
    /// Everything f16.
    F16,
    /// Matrices int8 with per-output-channel f32 scales, computed in float (activations
    /// stay f16); vectors f16.
    #[value(name = "int8")]
    I8,
    /// Matrices int8 per output channel and every linear layer's input quantised to int8
    /// per token at run time, summed exactly in i32; vectors f16.
    W8A8,
}

impl WeightDtype {
    /// The name `--dtype` takes and file names carry.
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::F16 => "f16",
            WeightDtype::I8 => "int8",
            WeightDtype::W8A8 => "w8a8",
        }
    }
}

fn get<'a>(map: &'a TensorMap, key: &str) -> Result<&'a HostTensor> {
    map.get(key).or_fail_with(Error::Architecture, || {
        format!("checkpoint lacks tensor {key}")
    })
}

fn shape<'a>(map: &'a TensorMap, key: &str) -> Result<&'a [usize]> {
    Ok(&get(map, key)?.shape)
}

fn dim(map: &TensorMap, key: &str, i: usize) -> Result<usize> {
    shape(map, key)?
        .get(i)
        .copied()
        .or_fail_with(Error::Architecture, || {
            format!("tensor {key} has too few dimensions")
        })
}

/// Reads the architecture off the tensor shapes.
pub fn infer_config(map: &TensorMap, opts: &ArchOptions) -> Result<ModelConfig> {
    let key = |kind, stage: usize, block| TensorId::new(kind, stage as u8, block).to_string();
    let mut cfg = ModelConfig::preset("soft_tiny").or_fail(Error::Architecture, "preset")?;
    cfg.stem_width = dim(map, &key(K::ConvWeight, 0, 0), 0)?;
    cfg.embed_dims[0] = dim(map, &key(K::ConvWeight, 0, 2), 0)?;
    for s in 1..4 {
        cfg.embed_dims[s] = dim(map, &key(K::ConvWeight, s + 1, 0), 0)?;
    }
    for s in 0..4 {
        let blocks: BTreeSet<usize> = map
            .keys()
            .filter_map(|k| schema::block_index(k, s as u8 + 1))
            .collect();
        cfg.depths[s] = blocks.len();
        if blocks.iter().enumerate().any(|(i, &b)| i != b) {
            fail!(
                Architecture,
                "stage {} blocks are not numbered 0..{}",
                s + 1,
                blocks.len()
            );
        }
        let pos_key = key(K::PosEmbed, s + 1, 0);
        let pos = shape(map, &pos_key)?;
        let cells = pos
            .get(1)
            .copied()
            .unwrap_or(0)
            .saturating_sub(usize::from(s == 3));
        let g = (cells as f64).sqrt().round() as usize;
        require!(
            g * g == cells && g > 0,
            Architecture,
            "{pos_key} does not hold a square grid"
        );
        cfg.pos_grids[s] = g;
    }
    let mut d3 = 0;
    for s in 0..3 {
        require!(
            cfg.depths[s] > 0,
            Architecture,
            "stage {} has no blocks: its head size cannot be inferred",
            s + 1
        );
        let lm = key(K::LandmarkWeight, s + 1, 0);
        let d = dim(map, &lm, 0)?;
        require!(
            d > 0 && cfg.embed_dims[s] % d == 0,
            Architecture,
            "{lm}: head dim {d} does not divide width"
        );
        cfg.heads[s] = cfg.embed_dims[s] / d;
        cfg.landmark_ratios[s] = dim(map, &lm, 2)?;
        cfg.vconv_sizes[s] = dim(map, &key(K::VConvWeight, s + 1, 0), 2)?;
        d3 = d;
    }
    cfg.heads[3] = match opts.stage4_heads {
        Some(h) => h,
        None => {
            require!(
                cfg.embed_dims[3] % d3 == 0,
                Architecture,
                "stage-4 width is not a multiple of the head dim; pass the stage-4 heads"
            );
            cfg.embed_dims[3] / d3
        }
    };
    cfg.stage4_mlp_hidden = if cfg.depths[3] > 0 {
        dim(map, &key(K::Mlp1Weight, 4, 0), 0)?
    } else {
        4 * cfg.embed_dims[3]
    };
    cfg.num_classes = dim(map, &key(K::HeadWeight, 0, 0), 0)?;
    cfg.newton_iters = opts.newton_iters;
    cfg.normalized = opts.normalized;
    cfg.validate()?;
    Ok(cfg)
}

/// A tensor ready for the blob: logical values in blob layout.
struct Prepared {
    id: TensorId,
    shape: Vec<usize>,
    values: Vec<f32>,
    /// Matrices may be quantised; vectors never are.
    matrix: bool,
}

/// A checkpoint being converted: remembers which keys were consumed, so that anything
/// left over is reported instead of silently dropped.
struct Source<'a> {
    map: &'a TensorMap,
    used: std::cell::RefCell<BTreeSet<String>>,
}

/// The values of tensor `key`, which must have shape `want` and be finite: every value
/// of the blob comes through here, so a NaN or infinity is named by its checkpoint key.
fn expect_shape(map: &Source<'_>, key: &str, want: &[usize]) -> Result<Vec<f32>> {
    let t = get(map.map, key)?;
    let numel: usize = want.iter().product();
    require!(
        t.shape == want && t.data.len() == numel,
        Architecture,
        "tensor {key} has shape {:?}, expected {want:?}",
        t.shape
    );
    if let Some(v) = t.data.iter().find(|v| !v.is_finite()) {
        fail!(Architecture, "tensor {key} holds a non-finite value ({v})");
    }
    map.used.borrow_mut().insert(key.to_string());
    Ok(t.data.clone())
}

/// `[out, in]` → `[in, out]`.
fn transpose(w: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = w[o * inp + i];
        }
    }
    t
}

/// `[co, ci, kh, kw]` → `[kh, kw, ci, co]`.
fn conv_layout(w: &[f32], co: usize, ci: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for o in 0..co {
        for i in 0..ci {
            for ky in 0..k {
                for kx in 0..k {
                    t[((ky * k + kx) * ci + i) * co + o] = w[((o * ci + i) * k + ky) * k + kx];
                }
            }
        }
    }
    t
}

/// BatchNorm's epsilon in the reference model (PyTorch's default).
const BATCH_NORM_EPS: f64 = 1e-5;

/// The checkpoint keys of a convolution and the BatchNorm folded into it.
struct ConvKeys {
    /// The convolution's module path (`patch_embed2.proj.0`).
    conv: String,
    /// The BatchNorm's module path (`patch_embed2.proj.1`).
    bn: String,
    weight: String,
    bias: String,
    /// The BatchNorm's tensors, as [`schema::BATCH_NORM_SUFFIXES`].
    norm: [String; 4],
}

impl ConvKeys {
    /// The keys of folded convolution `weight` (a [`Layout::FoldedConv`] tensor).
    fn of(weight: TensorId) -> Result<ConvKeys> {
        let key = Key::of(weight).or_fail(Error::Architecture, "not a tensor of the schema")?;
        let bias = TensorId::new(K::ConvBias, weight.stage, weight.block);
        let bn = key
            .batch_norm()
            .or_fail(Error::Architecture, "a convolution without BatchNorm")?;
        Ok(ConvKeys {
            conv: key.module().to_string(),
            bn: bn.to_string(),
            weight: key.to_string(),
            bias: bias.to_string(),
            norm: schema::BATCH_NORM_SUFFIXES.map(|s| bn.with_suffix(s).to_string()),
        })
    }
}

/// Conv + BatchNorm folded: `w' = w·γ/σ`, `b' = (b - μ)·γ/σ + β` with `σ = √(var + eps)`,
/// in f64. Where PyTorch's own BatchNorm would give a NaN or infinity (`var + eps ≤ 0`),
/// or the folded value overflows f32, the error names the checkpoint tensors at fault.
fn folded_conv(
    map: &Source<'_>,
    keys: &ConvKeys,
    ids: (TensorId, TensorId),
    ci: usize,
    co: usize,
) -> Result<[Prepared; 2]> {
    let (conv, bn) = (&keys.conv, &keys.bn);
    let w = expect_shape(map, &keys.weight, &[co, ci, 3, 3])?;
    let b = expect_shape(map, &keys.bias, &[co])?;
    let [gamma, beta, mean, var] = &keys.norm;
    let gamma = expect_shape(map, gamma, &[co])?;
    let beta = expect_shape(map, beta, &[co])?;
    let mean = expect_shape(map, mean, &[co])?;
    let var_key = var;
    let var = expect_shape(map, var_key, &[co])?;
    let mut scale = Vec::with_capacity(co);
    for (o, &v) in var.iter().enumerate() {
        let shifted = f64::from(v) + BATCH_NORM_EPS;
        require!(
            shifted > 0.0,
            Architecture,
            "tensor {var_key}: channel {o} holds a negative variance ({v}); folding \
             BatchNorm divides by sqrt(running_var + eps) = sqrt({shifted:e}), which is not \
             a positive real number"
        );
        scale.push(f64::from(gamma[o]) / shifted.sqrt());
    }
    let overflow = |what: &str, o: usize| {
        Error::Architecture(format!(
            "folding BatchNorm {bn} into {conv}: the folded {what} of output channel {o} \
             overflows f32 (scale weight/sqrt(running_var + eps) = {:e})",
            scale[o]
        ))
    };
    let fw: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let o = i / (ci * 9);
            let folded = (f64::from(v) * scale[o]) as f32;
            if folded.is_finite() {
                Ok(folded)
            } else {
                Err(overflow("weight", o))
            }
        })
        .collect::<Result<_>>()?;
    let fb: Vec<f32> = (0..co)
        .map(|o| {
            let centred = f64::from(b[o]) - f64::from(mean[o]);
            let folded = (centred * scale[o] + f64::from(beta[o])) as f32;
            if folded.is_finite() {
                Ok(folded)
            } else {
                Err(overflow("bias", o))
            }
        })
        .collect::<Result<_>>()?;
    Ok([
        Prepared {
            id: ids.0,
            shape: vec![3, 3, ci, co],
            values: conv_layout(&fw, co, ci, 3),
            matrix: true,
        },
        Prepared {
            id: ids.1,
            shape: vec![co],
            values: fb,
            matrix: false,
        },
    ])
}

/// Every tensor of the schema for `cfg`, read from the checkpoint under its key, checked
/// against its checkpoint shape and laid out as the blob stores it.
fn prepare(map: &Source<'_>, cfg: &ModelConfig) -> Result<Vec<Prepared>> {
    let mut out = Vec::new();
    for t in schema::tensors(cfg) {
        let shape = t.shape(cfg);
        let layout = t.entry.layout;
        let values = match layout {
            Layout::FoldedConv => {
                let bias = TensorId::new(K::ConvBias, t.id.stage, t.id.block);
                let (ci, co) = (shape.dims()[2], shape.outputs());
                out.extend(folded_conv(
                    map,
                    &ConvKeys::of(t.id)?,
                    (t.id, bias),
                    ci,
                    co,
                )?);
                continue;
            }
            // Read and folded with its weight.
            Layout::FoldedConvBias => continue,
            _ => expect_shape(map, &t.key().to_string(), layout.torch_shape(shape).dims())?,
        };
        let values = match layout {
            Layout::Linear => transpose(&values, shape.outputs(), shape.inputs()),
            Layout::Conv => conv_layout(&values, shape.outputs(), shape.dims()[2], shape.dims()[0]),
            _ => values,
        };
        out.push(Prepared {
            id: t.id,
            shape: shape.dims().to_vec(),
            values,
            matrix: layout.is_matrix(),
        });
    }
    Ok(out)
}

/// Symmetric per-output-channel int8 of an input-major `[.., out]` matrix.
fn quantize(values: &[f32], outputs: usize) -> (Vec<i8>, Vec<f32>) {
    let mut amax = vec![0.0f32; outputs];
    for row in values.chunks_exact(outputs) {
        for (a, v) in amax.iter_mut().zip(row) {
            *a = a.max(v.abs());
        }
    }
    let scales: Vec<f32> = amax
        .iter()
        .map(|&a| if a > 0.0 { a / 127.0 } else { 1.0 })
        .collect();
    let q = values
        .chunks_exact(outputs)
        .flat_map(|row| {
            row.iter()
                .zip(&scales)
                .map(|(v, s)| (v / s).round().clamp(-127.0, 127.0) as i8)
        })
        .collect();
    (q, scales)
}

/// `p`'s values as f16 bits, stored under `dtype`. A finite value beyond f16's range
/// would become an infinity the engine then refuses, far from its cause: it is refused
/// here, with the dtypes that can hold it.
fn to_f16(p: &Prepared, dtype: WeightDtype) -> Result<Vec<u16>> {
    p.values
        .iter()
        .map(|&v| {
            let h = half::f16::from_f32(v);
            if !h.is_finite() {
                let remedy = if p.matrix && dtype == WeightDtype::F16 {
                    "--dtype f32 or int8"
                } else {
                    "--dtype f32"
                };
                fail!(
                    Architecture,
                    "tensor {}: value {v:e} exceeds the f16 range (±{}); convert with {remedy}",
                    p.id,
                    half::f16::MAX
                );
            }
            Ok(h.to_bits())
        })
        .collect()
}

/// A blob in a 16-byte aligned buffer, as `Model::from_blob` wants it.
#[derive(Debug, Clone)]
pub struct AlignedBlob {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBlob {
    /// Copies `bytes` into aligned storage.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBlob {
            words,
            len: bytes.len(),
        }
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }
}

/// Converts a checkpoint into blob bytes. The blob's config is `cfg` with W8A8 set for
/// [`WeightDtype::W8A8`].
pub fn build_blob(map: &TensorMap, cfg: &ModelConfig, dtype: WeightDtype) -> Result<Vec<u8>> {
    build_blob_with(map, cfg, dtype, None)
}

/// [`build_blob`] with a metadata section (which must suit `cfg`: a label per class,
/// its variant).
pub fn build_blob_with(
    map: &TensorMap,
    cfg: &ModelConfig,
    dtype: WeightDtype,
    metadata: Option<&soft_core::Metadata<'_>>,
) -> Result<Vec<u8>> {
    let cfg = &ModelConfig {
        w8a8: dtype == WeightDtype::W8A8,
        ..*cfg
    };
    let source = Source {
        map,
        used: Default::default(),
    };
    let prepared = prepare(&source, cfg)?;
    let used = source.used.into_inner();
    if let Some(extra) = map.keys().find(|k| !used.contains(*k)) {
        fail!(
            Architecture,
            "unexpected tensor {extra} ({:?}): not part of this architecture ({})",
            map[extra].shape,
            "check --arch and the stage depths"
        );
    }
    struct Stored {
        dtype: Dtype,
        data: Vec<u8>,
        scales: Option<Vec<u8>>,
    }
    let stored: Vec<Stored> = prepared
        .iter()
        .map(|p| {
            Ok(match (dtype, p.matrix) {
                (WeightDtype::F32, _) => Stored {
                    dtype: Dtype::F32,
                    data: bytemuck::cast_slice(&p.values).to_vec(),
                    scales: None,
                },
                (WeightDtype::F16, _) | (WeightDtype::I8 | WeightDtype::W8A8, false) => Stored {
                    dtype: Dtype::F16,
                    data: bytemuck::cast_slice(&to_f16(p, dtype)?).to_vec(),
                    scales: None,
                },
                (WeightDtype::I8, true) => {
                    let (q, s) = quantize(&p.values, *p.shape.last().unwrap_or(&1));
                    Stored {
                        dtype: Dtype::I8,
                        data: bytemuck::cast_slice(&q).to_vec(),
                        scales: Some(bytemuck::cast_slice(&s).to_vec()),
                    }
                }
                (WeightDtype::W8A8, true) => {
                    let outputs = *p.shape.last().unwrap_or(&1);
                    let inputs = p.values.len() / outputs.max(1);
                    let mut q = vec![0i8; outputs * soft_kernels::quant::padded_depth(inputs)];
                    let mut s = vec![0.0f32; outputs];
                    soft_core::quantize_q8(&p.values, inputs, outputs, &mut q, &mut s)
                        .context("quantising to W8A8")?;
                    Stored {
                        dtype: Dtype::Q8,
                        data: bytemuck::cast_slice(&q).to_vec(),
                        scales: Some(bytemuck::cast_slice(&s).to_vec()),
                    }
                }
            })
        })
        .collect::<Result<_>>()?;
    let specs: Vec<TensorSpec<'_>> = prepared
        .iter()
        .zip(&stored)
        .map(|(p, s)| TensorSpec {
            id: p.id,
            dtype: s.dtype,
            shape: &p.shape,
            data: &s.data,
            scales: s.scales.as_deref(),
        })
        .collect();
    let len = format::encoded_len_with_metadata(&specs, metadata)
        .or_fail(Error::Architecture, "the metadata is too long")?;
    let mut out = vec![0u8; len];
    format::encode_with_metadata(cfg, &specs, metadata, &mut out).context("encoding the blob")?;
    Ok(out)
}

/// A checkpoint of random weights in the reference's key names and shapes, for benchmarks
/// and planning tests (weights `U(-1,1)/√fan_in`, unit norms, identity BatchNorm).
pub fn synthetic_checkpoint(cfg: &ModelConfig, seed: u64) -> TensorMap {
    // Two streams: one for the convolutions' and linear layers' weights, one for the
    // embeddings, landmark and V convolutions ("small" values).
    let mut weights = XorShift64::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut small_values = XorShift64::new(seed.wrapping_add(1) | 1);
    let mut map = TensorMap::new();
    let mut put = |key: String, shape: Shape, fill: &mut dyn FnMut() -> f32| {
        let data = (0..shape.numel()).map(|_| fill()).collect();
        let shape = shape.dims().to_vec();
        map.insert(key, HostTensor { data, shape });
    };
    for t in schema::tensors(cfg) {
        let shape = t.shape(cfg);
        let torch = t.entry.layout.torch_shape(shape);
        let key = t.key();
        let fan_in = 1.0 / (shape.inputs() as f32).sqrt();
        match t.entry.layout {
            Layout::FoldedConv => {
                put(key.to_string(), torch, &mut || weights.signed() * fan_in);
                let bias = TensorId::new(K::ConvBias, t.id.stage, t.id.block);
                let co = Shape::new(&[shape.outputs()]);
                put(bias.to_string(), co, &mut || weights.signed() * fan_in);
                let bn = key
                    .batch_norm()
                    .expect("a folded convolution has a BatchNorm");
                let identity = [1.0, 0.0, 0.0, 1.0]; // scale, shift, mean, variance
                for (suffix, v) in schema::BATCH_NORM_SUFFIXES.into_iter().zip(identity) {
                    put(bn.with_suffix(suffix).to_string(), co, &mut || v);
                }
            }
            Layout::FoldedConvBias => {}
            Layout::Linear => put(key.to_string(), torch, &mut || {
                weights.signed() * fan_in * 0.999
            }),
            Layout::Bias => put(key.to_string(), torch, &mut || 0.0),
            Layout::NormWeight => put(key.to_string(), torch, &mut || 1.0),
            Layout::Conv => put(key.to_string(), torch, &mut || {
                small_values.signed() * fan_in
            }),
            Layout::Depthwise => {
                let k = 1.0 / shape.outputs() as f32;
                put(key.to_string(), torch, &mut || small_values.signed() * k)
            }
            Layout::Parameter => put(key.to_string(), torch, &mut || small_values.signed() * 0.02),
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_tiny_round_trips_through_inference_of_its_config() {
        let cfg = ModelConfig::preset("soft_tiny").unwrap();
        let map = synthetic_checkpoint(&cfg, 1);
        assert_eq!(infer_config(&map, &ArchOptions::default()).unwrap(), cfg);
    }

    #[test]
    fn folded_batchnorm_equals_conv_then_batchnorm() {
        // One conv (2 -> 3 channels) + BatchNorm, at one output pixel, computed as PyTorch
        // does (conv in f32, then (y - mean) / sqrt(var + eps) * gamma + beta) and folded.
        let (ci, co) = (2, 3);
        let w: Vec<f32> = (0..co * ci * 9)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.07)
            .collect();
        let b = vec![0.3, -0.2, 0.05];
        let gamma = vec![1.5, 0.4, -0.9];
        let beta = vec![0.1, -0.3, 0.2];
        let mean = vec![0.25, -0.5, 1.0];
        let var = vec![0.8, 2.5, 0.01];
        let mut map = TensorMap::new();
        let mut put = |k: &str, shape: Vec<usize>, data: Vec<f32>| {
            map.insert(k.to_string(), HostTensor { shape, data });
        };
        put("c.weight", vec![co, ci, 3, 3], w.clone());
        put("c.bias", vec![co], b.clone());
        put("n.weight", vec![co], gamma.clone());
        put("n.bias", vec![co], beta.clone());
        put("n.running_mean", vec![co], mean.clone());
        put("n.running_var", vec![co], var.clone());
        let source = Source {
            map: &map,
            used: Default::default(),
        };
        let keys = ConvKeys {
            conv: "c".into(),
            bn: "n".into(),
            weight: "c.weight".into(),
            bias: "c.bias".into(),
            norm: schema::BATCH_NORM_SUFFIXES.map(|s| format!("n.{s}")),
        };
        let ids = (
            TensorId::new(K::ConvWeight, 0, 0),
            TensorId::new(K::ConvBias, 0, 0),
        );
        let [fw, fb] = folded_conv(&source, &keys, ids, ci, co).unwrap();
        let x: Vec<f32> = (0..ci * 9).map(|i| (i as f32 * 0.61).sin()).collect(); // [ci][ky][kx]
        for o in 0..co {
            let mut conv = b[o];
            for i in 0..ci {
                for k in 0..9 {
                    conv += w[(o * ci + i) * 9 + k] * x[i * 9 + k];
                }
            }
            let unfolded =
                (conv - mean[o]) / (var[o] + BATCH_NORM_EPS as f32).sqrt() * gamma[o] + beta[o];
            let mut folded = fb.values[o];
            for i in 0..ci {
                for k in 0..9 {
                    folded += fw.values[(k * ci + i) * co + o] * x[i * 9 + k];
                }
            }
            let tol =
                8.0 * f32::EPSILON * (1.0 + unfolded.abs() + gamma[o].abs() / var[o].sqrt() * 4.0);
            assert!(
                (folded - unfolded).abs() <= tol,
                "channel {o}: {folded} vs {unfolded}"
            );
        }
    }

    /// A model small enough to convert many times in a test.
    fn micro() -> ModelConfig {
        let mut cfg = ModelConfig::preset("soft_tiny").unwrap();
        cfg.stem_width = 4;
        cfg.embed_dims = [8, 16, 16, 16];
        cfg.heads = [1, 2, 2, 2];
        cfg.depths = [1, 1, 1, 1];
        cfg.pos_grids = [4, 2, 2, 1];
        cfg.stage4_mlp_hidden = 32;
        cfg.num_classes = 10;
        cfg
    }

    /// The error `build_blob` gives for the micro checkpoint after `poison`.
    fn conversion_error(dtype: WeightDtype, poison: impl FnOnce(&mut TensorMap)) -> Error {
        let cfg = micro();
        let mut map = synthetic_checkpoint(&cfg, 3);
        build_blob(&map, &cfg, dtype).expect("the unpoisoned checkpoint converts");
        poison(&mut map);
        build_blob(&map, &cfg, dtype).unwrap_err()
    }

    fn set(map: &mut TensorMap, key: &str, index: usize, value: f32) {
        map.get_mut(key).unwrap().data[index] = value;
    }

    #[test]
    fn a_negative_running_var_is_named_where_batchnorm_is_folded() {
        let e = conversion_error(WeightDtype::F32, |m| {
            set(m, "patch_embed2.proj.1.running_var", 3, -1.0)
        });
        let message = e.to_string();
        assert!(matches!(e.root(), Error::Architecture(_)), "{e}");
        assert!(
            message.starts_with("tensor patch_embed2.proj.1.running_var: channel 3")
                && message.contains("negative variance (-1)")
                && message.contains("sqrt("),
            "{message}"
        );
        assert!(!message.contains("proj.0.weight"), "{message}");
        // Just below -eps, and far below it.
        for var in [-1.0001e-5f32, -2.0, f32::MIN] {
            let e = conversion_error(WeightDtype::F32, |m| {
                set(m, "patch_embed1.proj.4.running_var", 0, var)
            });
            assert!(
                e.to_string()
                    .starts_with("tensor patch_embed1.proj.4.running_var: channel 0"),
                "{var}: {e}"
            );
        }
    }

    #[test]
    fn a_variance_just_above_minus_eps_folds_as_pytorch_evaluates_it() {
        let cfg = micro();
        let mut map = synthetic_checkpoint(&cfg, 3);
        set(&mut map, "patch_embed1.proj.1.running_var", 0, -0.5e-5);
        set(&mut map, "patch_embed1.proj.1.running_var", 1, 0.0);
        build_blob(&map, &cfg, WeightDtype::F32).unwrap();
    }

    #[test]
    fn non_finite_batchnorm_inputs_are_named_by_their_own_key() {
        for (key, value) in [
            ("patch_embed3.proj.1.running_mean", f32::NAN),
            ("patch_embed3.proj.1.running_var", f32::INFINITY),
            ("patch_embed3.proj.1.weight", f32::NEG_INFINITY),
            ("patch_embed3.proj.1.bias", f32::NAN),
            ("patch_embed3.proj.0.bias", f32::INFINITY),
        ] {
            let e = conversion_error(WeightDtype::F32, |m| set(m, key, 1, value));
            assert_eq!(
                e.to_string(),
                format!("tensor {key} holds a non-finite value ({value})")
            );
        }
    }

    #[test]
    fn a_fold_that_overflows_f32_names_both_the_conv_and_the_batchnorm() {
        // γ = f32::MAX over σ = √eps: a finite checkpoint whose folded weight is not.
        let e = conversion_error(WeightDtype::F32, |m| {
            set(m, "patch_embed4.proj.1.weight", 2, f32::MAX);
            set(m, "patch_embed4.proj.1.running_var", 2, 0.0);
        });
        let message = e.to_string();
        assert!(
            message.starts_with(
                "folding BatchNorm patch_embed4.proj.1 into patch_embed4.proj.0: the folded \
                 weight of output channel 2 overflows f32"
            ),
            "{message}"
        );
        // Only the bias overflows: a huge mean, unit scale.
        let e = conversion_error(WeightDtype::F32, |m| {
            set(m, "patch_embed4.proj.1.running_mean", 0, f32::MAX);
            set(m, "patch_embed4.proj.1.weight", 0, 4.0);
        });
        assert!(
            e.to_string().contains("folded bias of output channel 0"),
            "{e}"
        );
    }

    #[test]
    fn values_beyond_the_f16_range_are_refused_before_narrowing() {
        let bias = |v: f32| move |m: &mut TensorMap| set(m, "head.bias", 0, v);
        let e = conversion_error(WeightDtype::F16, bias(1e5));
        assert_eq!(
            e.to_string(),
            "tensor head.bias: value 1e5 exceeds the f16 range (±65504); convert with --dtype f32"
        );
        // int8 stores vectors as f16 too.
        let e = conversion_error(WeightDtype::I8, bias(-1e5));
        assert!(e.to_string().contains("value -1e5 exceeds"), "{e}");
        // A matrix could be int8 instead.
        let weight = |m: &mut TensorMap| set(m, "block4.0.mlp.fc1.weight", 5, 7e4);
        let e = conversion_error(WeightDtype::F16, weight);
        assert_eq!(
            e.to_string(),
            "tensor block4.0.mlp.fc1.weight: value 7e4 exceeds the f16 range (±65504); \
             convert with --dtype f32 or int8"
        );
        let cfg = micro();
        let mut map = synthetic_checkpoint(&cfg, 3);
        weight(&mut map);
        for dtype in [WeightDtype::I8, WeightDtype::F32] {
            if let Err(e) = build_blob(&map, &cfg, dtype) {
                panic!("{dtype:?}: {e}");
            }
        }
        // 65519 rounds to f16's largest value; 65520 rounds to infinity.
        let mut map = synthetic_checkpoint(&cfg, 3);
        set(&mut map, "head.bias", 0, 65519.0);
        build_blob(&map, &cfg, WeightDtype::F16).unwrap();
        set(&mut map, "head.bias", 0, 65520.0);
        assert!(build_blob(&map, &cfg, WeightDtype::F16).is_err());
    }

    #[test]
    fn quantize_is_symmetric_per_output() {
        // Input-major [2 inputs, 3 outputs]: columns (1, 4), (-2, -1), (0.5, 0).
        let w = [1.0, -2.0, 0.5, 4.0, -1.0, 0.0];
        let (q, s) = quantize(&w, 3);
        assert_eq!(s, vec![4.0 / 127.0, 2.0 / 127.0, 0.5 / 127.0]);
        assert_eq!(q, vec![32, -127, 127, 127, -64, 0]);
    }
}
