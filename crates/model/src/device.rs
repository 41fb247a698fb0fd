//! Where the tensors live. Backends are types in burn, so a run picks one at start-up from a
//! `DeviceSpec` (`cpu`, `cuda`, `cuda:N`) and monomorphises its work for it; asking for a device
//! this build cannot drive is an error that says how to get a build that can.

use std::fmt;
use std::str::FromStr;

/// The CPU backend: burn's pure-Rust Flex backend.
pub type FlexBackend = burn::backend::Flex;

/// Whether `B` is the CPU backend, with or without autodiff: the few layers that take another
/// route on it (where burn-flex has a slow path) ask this.
pub(crate) fn is_flex<B: burn::tensor::backend::Backend>() -> bool {
    use std::any::TypeId;
    let id = TypeId::of::<B>();
    id == TypeId::of::<FlexBackend>() || id == TypeId::of::<burn::backend::Autodiff<FlexBackend>>()
}

/// `value` as a `U` when `T` is `U`: how a layer generic over the backend reaches its CPU
/// kernel once [`is_flex`] said yes.
pub(crate) fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<U>>() {
        Some(cast) => Ok(cast.take().expect("filled above")),
        None => Err(slot.expect("not taken")),
    }
}

/// The CUDA backend (feature `cuda`).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// A device as users write it on the command line and in configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    #[error("unknown device {0:?}: expected cpu, cuda or cuda:N")]
    Unknown(String),
    #[error("device {0} needs a build with CUDA support: rebuild with `cargo build --release --features cuda`")]
    CudaNotCompiled(DeviceSpec),
    #[error("device {device} cannot be used: {reason}")]
    CudaUnavailable { device: DeviceSpec, reason: String },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let lower = text.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" | "flex" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl DeviceSpec {
    /// Whether this build can drive the device (CUDA needs the `cuda` feature; whether a GPU is
    /// actually present is only known when the backend initialises).
    pub fn check_compiled(self) -> Result<(), DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(()),
            DeviceSpec::Cuda(_) if cfg!(feature = "cuda") => Ok(()),
            DeviceSpec::Cuda(_) => Err(DeviceError::CudaNotCompiled(self)),
        }
    }

    /// Whether the device can be used now: compiled in and, for CUDA, the NVIDIA driver, NVRTC
    /// (CUDA's run-time compiler, which builds the kernels) and the GPU itself are there. Call it
    /// before the first tensor: without it, a machine with no GPU fails inside the backend's
    /// device thread with a panic instead of a message. For CUDA it also points the kernel
    /// caches at their folder ([`crate::kernel_cache`]).
    pub fn check_available(self) -> Result<(), DeviceError> {
        self.check_compiled()?;
        match self {
            DeviceSpec::Cpu => Ok(()),
            DeviceSpec::Cuda(ordinal) => {
                cuda::probe(ordinal).map_err(|reason| DeviceError::CudaUnavailable { device: self, reason })?;
                #[cfg(feature = "cuda")]
                crate::kernel_cache::configure();
                Ok(())
            }
        }
    }

    /// The backend's name for reports and run manifests.
    pub fn backend_name(self) -> &'static str {
        match self {
            DeviceSpec::Cpu => "flex",
            DeviceSpec::Cuda(_) => "cuda",
        }
    }

    #[cfg(feature = "cuda")]
    pub fn cuda_device(self) -> Option<burn::backend::cuda::CudaDevice> {
        match self {
            DeviceSpec::Cuda(n) => Some(burn::backend::cuda::CudaDevice::new(n)),
            DeviceSpec::Cpu => None,
        }
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use cudarc::driver::{result as driver, sys as driver_sys};
    use cudarc::nvrtc::sys as nvrtc_sys;

    /// Looks for libcuda and libnvrtc first (cudarc loads them on first use and panics when they
    /// are missing), then starts the driver, counts the GPUs and asks NVRTC its version.
    pub(super) fn probe(ordinal: usize) -> Result<(), String> {
        // SAFETY: both only try to open the libraries by their usual names.
        if !unsafe { driver_sys::is_culib_present() } {
            return Err("the NVIDIA driver library (libcuda.so) was not found: this machine has no NVIDIA \
                        driver, or its folder is not on LD_LIBRARY_PATH; use --device cpu"
                .into());
        }
        if !unsafe { nvrtc_sys::is_culib_present() } {
            return Err("NVRTC (libnvrtc.so, CUDA's run-time compiler, from the CUDA toolkit or the \
                        nvidia-cuda-nvrtc Python package) was not found: add its folder to LD_LIBRARY_PATH, \
                        or use --device cpu"
                .into());
        }
        driver::init().map_err(|e| format!("the NVIDIA driver did not start ({e})"))?;
        let count = driver::device::get_count().map_err(|e| format!("cannot count the GPUs ({e})"))?;
        if ordinal >= count.max(0) as usize {
            return Err(format!("this machine has {count} CUDA device(s), numbered from 0"));
        }
        let (mut major, mut minor) = (0, 0);
        // SAFETY: NVRTC writes two ints through valid pointers.
        unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| format!("NVRTC did not answer ({e:?})"))?;
        Ok(())
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    /// Never reached: `check_compiled` refuses CUDA devices in builds without the feature.
    pub(super) fn probe(_ordinal: usize) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    #[test]
    fn parses_what_users_write() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert!(matches!("tpu".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
        assert!(matches!("cuda:x".parse::<DeviceSpec>(), Err(DeviceError::Unknown(_))));
        assert_eq!(DeviceSpec::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        let result = DeviceSpec::Cuda(0).check_compiled();
        if cfg!(feature = "cuda") {
            assert!(result.is_ok());
        } else {
            assert!(result.unwrap_err().to_string().contains("--features cuda"));
        }
    }

    #[test]
    fn flex_backend_computes() {
        let device = Default::default();
        let a = Tensor::<FlexBackend, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        let product = a.clone().matmul(a).into_data().to_vec::<f32>().unwrap();
        assert_eq!(product, vec![7.0, 10.0, 15.0, 22.0]);
    }
}
