//! The service binary, run as a process to its end: a model whose metadata.json gives sizes
//! it cannot use stops it at startup, with status 1 and one line naming the file, the field,
//! what is wrong and what would be right. ORT_DYLIB_PATH as for the crate's other tests
//! (the Makefile sets it): the library loads before the model is fetched.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// The binary's last line of stderr and its exit code, with MODEL_URI a fixed graph in `dir`
/// whose metadata.json has these preprocessing sizes.
fn run_with_sizes(dir: &Path, resize: u32, crop: u32) -> (String, Option<i32>) {
    std::fs::create_dir_all(dir).unwrap();
    let graph = b"never loaded: the sizes are checked first";
    let model = dir.join("model.fixed.onnx");
    std::fs::write(&model, graph).unwrap();
    let metadata = serde_json::json!({
        "labels": ["a", "b", "c", "d", "e", "f"],
        "artifacts": {"model.fixed.onnx": {"sha256": hex::encode(Sha256::digest(graph))}},
        "graphs": {"model.fixed.onnx": {
            "input": {"name": "image", "dtype": "uint8", "shape": ["batch", crop, crop, 3]},
            "output": {"name": "probabilities", "dtype": "float32", "shape": ["batch", 6]},
        }},
        "preprocessing": {"resize_shorter_side": resize, "center_crop": crop},
    });
    std::fs::write(dir.join("metadata.json"), metadata.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rust_onnx_serving"))
        .env("MODEL_URI", &model)
        .env("PORT", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    (last, output.status.code())
}

#[test]
fn a_crop_larger_than_the_resize_stops_startup_in_one_line() {
    let dir = std::env::temp_dir().join(format!("rust_onnx_serving-startup-{}", std::process::id()));
    let (line, code) = run_with_sizes(&dir, 180, 200);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        line,
        format!(
            "rust_onnx_serving: fatal: {}: preprocessing.center_crop is 200, more than \
             preprocessing.resize_shorter_side (180); expected a whole number of pixels from 1 to 180",
            dir.join("metadata.json").display()
        )
    );
    assert_eq!(code, Some(1));
}
