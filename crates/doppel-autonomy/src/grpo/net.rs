//! The learned policy's network and what it sees and does.
//!
//! Observations (14 numbers, scaled near ±1) come from the readings alone: the loop's supply
//! and return temperatures, flow, the hall's load, the weather, the tower water, the setpoint,
//! how many pumps and chillers run, the hour (as sine and cosine), the weekend and the day tariff.
//! Actions are three choices made together every decision period: the setpoint half a degree
//! down, kept or up (within 6 to 8.5 °C), one chiller fewer, the same or more, one pump fewer,
//! the same or more. Maintenance orders are the rule-based operator's. With
//! [`Control::Setpoint`] only the first head acts, and the operator stages as it always does
//! (a policy learned as a correction to the operator, not a replacement of it).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Numbers an observation holds.
pub const FEATURES: usize = 14;
/// Choices of each of the three action heads (down, keep, up).
pub const CHOICES: usize = 3;
pub const HEADS: usize = 3;

/// What the network moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// The setpoint and the staging of chillers and pumps.
    #[default]
    All,
    /// The setpoint alone, beside the rule-based operator's staging.
    Setpoint,
}

impl Control {
    /// The heads that act (the first ones).
    pub fn heads(self) -> usize {
        match self {
            Control::All => HEADS,
            Control::Setpoint => 1,
        }
    }

    pub fn parse(text: &str) -> Option<Control> {
        match text {
            "all" => Some(Control::All),
            "setpoint" => Some(Control::Setpoint),
            _ => None,
        }
    }
}

/// The setpoint moves by this much, and stays within this range, °C.
pub const SETPOINT_STEP: f64 = 0.5;
pub const SETPOINT_RANGE: (f64, f64) = (6.0, 8.5);

/// Observations → hidden → hidden → three heads of three choices.
#[derive(Module, Debug)]
pub struct PolicyNet {
    input: Linear,
    hidden: Linear,
    heads: Linear,
}

impl PolicyNet {
    pub fn new(width: usize, device: &Device) -> PolicyNet {
        PolicyNet {
            input: LinearConfig::new(FEATURES, width).init(device),
            hidden: LinearConfig::new(width, width).init(device),
            heads: LinearConfig::new(width, HEADS * CHOICES).init(device),
        }
    }

    /// Log-probabilities of every choice of every head.
    /// obs [n, FEATURES] → [n, HEADS, CHOICES]
    pub fn log_probs(&self, obs: Tensor<2>) -> Tensor<3> {
        let [n, _] = obs.dims();
        let h = self.input.forward(obs).tanh(); // [n, width]
        let h = self.hidden.forward(h).tanh(); // [n, width]
        let logits = self.heads.forward(h).reshape([n, HEADS, CHOICES]); // [n, HEADS, CHOICES]
        log_softmax(logits, 2)
    }

    /// Log-probability of the choices taken, summed over the first `heads` heads (those
    /// that act).
    /// obs [n, FEATURES], actions [n, HEADS] → [n]
    pub fn log_prob_of(&self, obs: Tensor<2>, actions: Tensor<2, Int>, heads: usize) -> Tensor<1> {
        let [n, _] = obs.dims();
        let all = self.log_probs(obs); // [n, HEADS, CHOICES]
        let taken = all.gather(2, actions.reshape([n, HEADS, 1])); // [n, HEADS, 1]
        let acting = taken.reshape([n, HEADS]).slice([0..n, 0..heads]); // [n, heads]
        acting.sum_dim(1).reshape([n]) // [n]
    }
}

/// Observations → hidden → hidden → the reward still to come (PPO's critic; GRPO needs none).
#[derive(Module, Debug)]
pub struct ValueNet {
    input: Linear,
    hidden: Linear,
    out: Linear,
}

impl ValueNet {
    pub fn new(width: usize, device: &Device) -> ValueNet {
        ValueNet {
            input: LinearConfig::new(FEATURES, width).init(device),
            hidden: LinearConfig::new(width, width).init(device),
            out: LinearConfig::new(width, 1).init(device),
        }
    }

    /// obs [n, FEATURES] → [n]
    pub fn forward(&self, obs: Tensor<2>) -> Tensor<1> {
        let [n, _] = obs.dims();
        let h = self.input.forward(obs).tanh(); // [n, width]
        let h = self.hidden.forward(h).tanh(); // [n, width]
        self.out.forward(h).reshape([n]) // [n]
    }
}

/// Builds a network with its initial weights drawn from `seed`: burn draws from one
/// generator per device, so seeding it and drawing happen under one process-wide lock (two
/// trainings in one process cannot interleave). Same seed, same weights, same policy.
pub fn seeded<T>(device: &Device, seed: u64, make: impl FnOnce() -> T) -> T {
    static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
    device.seed(seed);
    make()
}

/// Rows of observations as a tensor.
pub fn observations(rows: &[[f32; FEATURES]], device: &Device) -> Tensor<2> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), FEATURES]), device)
}

/// Rows of actions as a tensor.
pub fn actions(rows: &[[usize; HEADS]], device: &Device) -> Tensor<2, Int> {
    let flat: Vec<i64> = rows.iter().flatten().map(|&a| a as i64).collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), HEADS]), device)
}

/// Each head's probabilities for one observation, on an inference device.
pub fn probabilities(
    net: &PolicyNet,
    obs: &[f32; FEATURES],
    device: &Device,
) -> [[f32; CHOICES]; HEADS] {
    let logp = net.log_probs(observations(&[*obs], device));
    let values: Vec<f32> = logp
        .exp()
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    let mut out = [[0.0; CHOICES]; HEADS];
    for (h, head) in out.iter_mut().enumerate() {
        for (c, p) in head.iter_mut().enumerate() {
            *p = values
                .get(h * CHOICES + c)
                .copied()
                .unwrap_or(1.0 / CHOICES as f32);
        }
    }
    out
}
