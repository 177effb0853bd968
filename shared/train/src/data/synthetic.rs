//! Gaussian blobs: `classes` centres, examples scattered around them. Same seed, same data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Dataset, Inputs, Targets};

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box-Muller: two uniforms in (0, 1] to one standard normal.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

pub(super) fn blobs(examples: usize, features: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB10B5);
    let centres: Vec<f32> = (0..classes * features)
        .map(|_| 2.0 * normal(&mut rng))
        .collect();
    let mut values = Vec::with_capacity(examples * features);
    let mut labels = Vec::with_capacity(examples);
    for i in 0..examples {
        let class = i % classes;
        labels.push(class as u32);
        for f in 0..features {
            values.push(centres[class * features + f] + normal(&mut rng));
        }
    }
    Dataset {
        inputs: Inputs::Dense {
            values,
            shape: vec![features],
        },
        targets: Targets::Class(labels),
    }
}
