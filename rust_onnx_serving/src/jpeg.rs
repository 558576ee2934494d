//! JPEG to RGB with libjpeg-turbo's TurboJPEG 3 API (built from source into the binary):
//! the decoder Pillow and the Python ONNX service use, so every service reads the same pixels.
//!
//! NOTE: the `turbojpeg` crate's safe wrapper turns every warning into an error and hides
//! the error code, so this module calls the C API (`turbojpeg::raw`) itself: a warning
//! (TJERR_WARNING) still yields the whole image, as Pillow decodes through libjpeg's
//! recoverable warnings. The one warning that matters is running out of data: libjpeg then
//! grey-fills the rest, where Pillow refuses "image file is truncated".
//!
//! With JPEG_DCT_SCALING, a large JPEG is decoded at 1/2, 1/4 or 1/8 of its size in the DCT
//! domain (geometry.rs's rule: the shorter side stays at least the model's resize size),
//! which saves most of the decoding and resizing work. Only where the Python service scales
//! too, so that both see the same pixels: it hands CMYK and YCCK JPEGs, and any JPEG libjpeg
//! warns about, to Pillow, which decodes them whole; so they are decoded whole here too.

use std::ffi::CStr;

use turbojpeg::raw;

use crate::decode::{ImageLimits, RgbPixels, check_dimensions, unreadable};
use crate::errors::{ErrorType, ServiceError};
use crate::geometry::Geometry;

/// libjpeg's JWRN_JPEG_EOF, which TurboJPEG's memory source emits when the data runs out.
const PREMATURE_END: &str = "Premature end of JPEG file";

/// What one TurboJPEG call gave: libjpeg warnings still produce a whole image.
enum Outcome {
    Clean,
    Warning(String),
    Fatal(String),
}

/// A TurboJPEG decompressor; each inference thread owns one, so no call is ever shared.
pub struct JpegDecoder {
    handle: raw::tjhandle,
    /// JPEG_DCT_SCALING: the model's sizes, which a scaled decode keeps enough pixels for;
    /// None decodes whole.
    dct_scaling: Option<Geometry>,
}

// SAFETY: a TurboJPEG handle is plain heap state with no thread affinity; `&mut self` on
// every call means one thread at a time uses it.
unsafe impl Send for JpegDecoder {}

impl Drop for JpegDecoder {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { raw::tj3Destroy(self.handle) }
    }
}

struct Header {
    width: u32,
    height: u32,
    cmyk: bool,
    /// Lossless JPEGs have no DCT, and TurboJPEG ignores any scaling factor for them.
    lossless: bool,
}

/// The size TurboJPEG decodes to at 1/`denominator` scale: ceil(side / denominator) (its
/// TJSCALED), pixels of `channels` bytes.
struct Output {
    width: u32,
    height: u32,
    channels: usize,
}

impl Output {
    fn bytes(&self) -> usize {
        self.width as usize * self.height as usize * self.channels
    }
}

impl JpegDecoder {
    pub fn new(dct_scaling: Option<Geometry>) -> Result<Self, String> {
        // SAFETY: tj3Init has no preconditions; a null handle is checked below.
        let handle = unsafe { raw::tj3Init(raw::TJINIT_TJINIT_DECOMPRESS as CInt) };
        if handle.is_null() {
            return Err("TurboJPEG could not allocate a decompressor".to_owned());
        }
        let decoder = Self { handle, dct_scaling };
        // Markers (ICC profiles, EXIF) are never used: do not keep them in memory.
        decoder.set(raw::TJPARAM_TJPARAM_SAVEMARKERS, 0)?;
        Ok(decoder)
    }

    fn set(&self, parameter: raw::TJPARAM, value: CInt) -> Result<(), String> {
        // SAFETY: a live handle and a parameter of the TurboJPEG 3 API.
        if unsafe { raw::tj3Set(self.handle, parameter as CInt, value) } == 0 {
            Ok(())
        } else {
            Err(self.error_text())
        }
    }

    fn get(&self, parameter: raw::TJPARAM) -> CInt {
        // SAFETY: a live handle and a parameter of the TurboJPEG 3 API.
        unsafe { raw::tj3Get(self.handle, parameter as CInt) }
    }

    fn error_text(&self) -> String {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by TurboJPEG, valid
        // until the next call on this handle; it is copied at once.
        unsafe { CStr::from_ptr(raw::tj3GetErrorStr(self.handle)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The outcome of a TurboJPEG call that returned `status`.
    fn outcome(&self, status: CInt) -> Outcome {
        if status == 0 {
            return Outcome::Clean;
        }
        // SAFETY: a live handle.
        let code = unsafe { raw::tj3GetErrorCode(self.handle) };
        if code == raw::TJERR_TJERR_WARNING as CInt {
            Outcome::Warning(self.error_text())
        } else {
            Outcome::Fatal(self.error_text())
        }
    }

    fn read_header(&mut self, data: &[u8]) -> Result<Header, ServiceError> {
        // SAFETY: `data` is a live slice of the given length.
        let status = unsafe { raw::tj3DecompressHeader(self.handle, data.as_ptr(), data.len() as _) };
        if let Outcome::Fatal(message) = self.outcome(status) {
            return Err(unreadable(&message));
        }
        // A warning in the header (stray bytes before a marker) leaves the header read.
        let dimension = |parameter| u32::try_from(self.get(parameter)).unwrap_or(0);
        let colorspace = self.get(raw::TJPARAM_TJPARAM_COLORSPACE);
        Ok(Header {
            width: dimension(raw::TJPARAM_TJPARAM_JPEGWIDTH),
            height: dimension(raw::TJPARAM_TJPARAM_JPEGHEIGHT),
            cmyk: colorspace == raw::TJCS_TJCS_CMYK as CInt || colorspace == raw::TJCS_TJCS_YCCK as CInt,
            lossless: self.get(raw::TJPARAM_TJPARAM_LOSSLESS) == 1,
        })
    }

    /// The JPEG_DCT_SCALING denominator for this image: 1 (whole) when scaling is off, for
    /// CMYK and YCCK, and for lossless JPEGs, which have no DCT.
    fn denominator(&self, header: &Header) -> u32 {
        match self.dct_scaling {
            Some(geometry) if !header.cmyk && !header.lossless => {
                geometry.dct_scale_denominator(header.width, header.height)
            }
            _ => 1,
        }
    }

    /// Sets the scaling factor for the next decompression (it stays on the handle, so it is
    /// set on every image) and says what it will produce.
    fn scale_for(&mut self, header: &Header, denominator: u32) -> Result<Output, ServiceError> {
        let factor = raw::tjscalingfactor {
            num: 1,
            denom: denominator as CInt,
        };
        // SAFETY: a live handle; 1/1, 1/2, 1/4 and 1/8 are all factors TurboJPEG supports.
        if unsafe { raw::tj3SetScalingFactor(self.handle, factor) } != 0 {
            return Err(unreadable(&self.error_text()));
        }
        Ok(Output {
            width: header.width.div_ceil(denominator),
            height: header.height.div_ceil(denominator),
            channels: if header.cmyk { 4 } else { 3 },
        })
    }

    /// Decompress into `pixels` (`output.channels` bytes a pixel: RGB, or CMYK as libjpeg
    /// gives it).
    fn decompress(&mut self, data: &[u8], output: &Output, pixels: &mut [u8]) -> Outcome {
        assert_eq!(pixels.len(), output.bytes());
        let format = if output.channels == 4 {
            raw::TJPF_TJPF_CMYK
        } else {
            raw::TJPF_TJPF_RGB
        };
        let pitch = output.width as usize * output.channels;
        // SAFETY: `pixels` holds exactly height rows of `pitch` bytes (asserted above), the
        // size TurboJPEG writes for the header just read at the scaling factor just set
        // (scale_for); `data` is a live slice.
        let status = unsafe {
            raw::tj3Decompress8(
                self.handle,
                data.as_ptr(),
                data.len() as _,
                pixels.as_mut_ptr(),
                pitch as CInt,
                format as CInt,
            )
        };
        self.outcome(status)
    }

    /// Decode to RGB as `Image.open(data).convert("RGB")` does (scaled down with
    /// JPEG_DCT_SCALING), the size limits checked from the header first.
    pub fn decode(&mut self, data: &[u8], limits: &ImageLimits) -> Result<RgbPixels, ServiceError> {
        let header = self.read_header(data)?;
        check_dimensions(header.width, header.height, limits)?;
        let denominator = self.denominator(&header);
        let (image, warned) = self.decode_at(data, &header, denominator)?;
        if warned && denominator > 1 {
            // libjpeg warned: the Python service decodes such a JPEG whole, with Pillow (see
            // the module's comment). Rare, so decoding it twice costs little.
            return Ok(self.decode_at(data, &header, 1)?.0);
        }
        Ok(image)
    }

    /// The image at 1/`denominator` scale, and whether libjpeg warned (and decoded anyway).
    fn decode_at(
        &mut self,
        data: &[u8],
        header: &Header,
        denominator: u32,
    ) -> Result<(RgbPixels, bool), ServiceError> {
        let output = self.scale_for(header, denominator)?;
        let mut pixels = vec![0u8; output.bytes()];
        let warned = match self.decompress(data, &output, &mut pixels) {
            Outcome::Clean => false,
            Outcome::Fatal(message) => return Err(unreadable(&message)),
            // The data ran out before the end marker (TurboJPEG reports only the first warning,
            // hence the marker walk too): libjpeg grey-filled the rest, Pillow refuses it as
            // "image file is truncated", even when only the end marker is missing.
            Outcome::Warning(message) if message.contains(PREMATURE_END) || !reaches_end_marker(data) => {
                return Err(ServiceError::new(
                    ErrorType::UnsupportedImage,
                    "the image cannot be decoded (the JPEG data ends before its end marker: truncated)",
                ));
            }
            Outcome::Warning(message) => {
                tracing::debug!("JPEG decoded through a libjpeg warning: {message}");
                true
            }
        };
        if output.channels == 4 {
            adobe_cmyk_to_rgb(&mut pixels);
        }
        let image = RgbPixels {
            width: output.width,
            height: output.height,
            data: pixels,
        };
        Ok((image, warned))
    }
}

type CInt = std::os::raw::c_int;

/// Whether reading `data` as libjpeg does meets an end-of-image marker before the data runs
/// out: marker segments are skipped by their declared length, entropy-coded data up to the
/// next marker (a stuffed 0xFF00 or a restart marker is data), and stray bytes between
/// markers are skipped as libjpeg skips them (with its "extraneous bytes" warning).
fn reaches_end_marker(data: &[u8]) -> bool {
    let mut at = 2; // after SOI
    loop {
        while data.get(at).is_some_and(|&b| b != 0xFF) {
            at += 1;
        }
        while data.get(at) == Some(&0xFF) {
            at += 1;
        }
        let Some(&code) = data.get(at) else {
            return false;
        };
        at += 1;
        match code {
            0xD9 => return true,
            // A stuffed zero outside a scan is skipped; SOI, TEM and RSTn have no length.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let Some(length) = data.get(at..at + 2) else {
            return false;
        };
        at += usize::from(u16::from_be_bytes([length[0], length[1]]));
        if at > data.len() {
            return false;
        }
        if code == 0xDA {
            // Entropy-coded data: runs to the first 0xFF that starts a marker.
            loop {
                let Some(offset) = data[at..].iter().position(|&b| b == 0xFF) else {
                    return false;
                };
                let mut next = at + offset;
                while data.get(next) == Some(&0xFF) {
                    next += 1;
                }
                match data.get(next) {
                    None => return false,
                    Some(0x00 | 0xD0..=0xD7) => at = next + 1,
                    Some(_) => {
                        at = next - 1; // the marker's 0xFF, read by the outer loop
                        break;
                    }
                }
            }
        }
    }
}

/// Pillow's reading of a CMYK JPEG, in place: the samples as Adobe stores them, inverted
/// ("CMYK;I", which Pillow always assumes), then `convert("RGB")`'s
/// `r = (255 - k) - c * (255 - k) / 255`, rounded as Pillow's MULDIV255.
fn adobe_cmyk_to_rgb(pixels: &mut Vec<u8>) {
    let count = pixels.len() / 4;
    for i in 0..count {
        // Stored (inverted) values: c = 255 - stored_c and 255 - k = stored_k.
        let [c, m, y, k] = [
            pixels[4 * i],
            pixels[4 * i + 1],
            pixels[4 * i + 2],
            pixels[4 * i + 3],
        ];
        let nk = u32::from(k);
        let channel = |stored: u8| {
            let product = u32::from(255 - stored) * nk + 128;
            (nk - (((product >> 8) + product) >> 8)) as u8
        };
        pixels[3 * i] = channel(c);
        pixels[3 * i + 1] = channel(m);
        pixels[3 * i + 2] = channel(y);
    }
    pixels.truncate(3 * count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::DEMO;

    #[test]
    fn end_marker_search_follows_segments_and_scans() {
        // SOI, a COM segment holding FFD9, SOS, entropy data with FF00 and RST0, EOI.
        let complete = [
            0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x04, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0x34,
            0xFF, 0xD0, 0x56, 0xFF, 0xD9,
        ];
        assert!(reaches_end_marker(&complete));
        for cut in 4..complete.len() - 1 {
            assert!(!reaches_end_marker(&complete[..cut]), "cut at {cut}");
        }
        // Stray bytes before the end marker are skipped, as libjpeg skips them.
        let mut stray = complete[..complete.len() - 2].to_vec();
        stray.extend([0xFF, 0xC4, 0x00, 0x02, 0x13, 0x37, 0xFF, 0xD9]);
        assert!(reaches_end_marker(&stray));
    }

    const LIMITS: ImageLimits = ImageLimits {
        max_pixels: 1_000_000,
        max_aspect_ratio: 20,
    };

    /// A 64x48 gradient JPEG in `format` (RGB or CMYK samples).
    fn gradient_jpeg(format: turbojpeg::PixelFormat) -> Vec<u8> {
        sized_jpeg(format, (64, 48), false)
    }

    /// A `width` x `height` pattern JPEG in `format` (RGB, greyscale or CMYK samples),
    /// lossless or not.
    fn sized_jpeg(
        format: turbojpeg::PixelFormat,
        (width, height): (usize, usize),
        lossless: bool,
    ) -> Vec<u8> {
        let channels = format.size();
        let pixels: Vec<u8> = (0..width * height * channels)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let image = turbojpeg::Image {
            pixels,
            width,
            pitch: width * channels,
            height,
            format,
        };
        let mut compressor = turbojpeg::Compressor::new().unwrap();
        compressor.set_quality(90).unwrap();
        let subsampling = match format {
            turbojpeg::PixelFormat::GRAY => turbojpeg::Subsamp::Gray,
            _ if lossless => turbojpeg::Subsamp::None,
            _ => turbojpeg::Subsamp::Sub2x2,
        };
        compressor.set_subsamp(subsampling).unwrap();
        compressor.set_lossless(lossless).unwrap();
        compressor.compress_to_vec(image.as_deref()).unwrap()
    }

    fn decode(data: &[u8]) -> Result<RgbPixels, ServiceError> {
        JpegDecoder::new(None).unwrap().decode(data, &LIMITS)
    }

    /// JPEG_DCT_SCALING: ceil(w / d) x ceil(h / d), d from the header's size; CMYK,
    /// lossless (no DCT to scale) and warned-about JPEGs whole. The factor is set again for
    /// every image.
    #[test]
    fn dct_scaling_decodes_large_jpegs_smaller() {
        use turbojpeg::PixelFormat::{CMYK, GRAY, RGB};
        let limits = ImageLimits {
            max_pixels: 10_000_000,
            max_aspect_ratio: 20,
        };
        let mut scaling = JpegDecoder::new(Some(DEMO)).unwrap();
        let mut whole = JpegDecoder::new(None).unwrap();
        let size = |decoder: &mut JpegDecoder, data: &[u8]| {
            let image = decoder.decode(data, &limits).unwrap();
            assert_eq!(image.data.len(), (image.width * image.height * 3) as usize);
            (image.width, image.height)
        };
        // Shorter side 517: 1/2 keeps ceil(517 / 2) = 259 >= 256.
        let rgb = sized_jpeg(RGB, (1030, 517), false);
        assert_eq!(size(&mut scaling, &rgb), (515, 259));
        assert_eq!(size(&mut whole, &rgb), (1030, 517));
        // Stray bytes before the end marker: libjpeg warns, and the image is decoded whole,
        // as the Python service's Pillow fallback decodes it.
        let mut stray = rgb[..rgb.len() - 2].to_vec();
        stray.extend([0x00, 0x13, 0x37, 0xFF, 0xD9]);
        assert_eq!(
            scaling.decode(&stray, &limits).unwrap(),
            whole.decode(&stray, &limits).unwrap()
        );
        // 1/8: ceil(2050 / 8) = 257, ceil(2101 / 8) = 263.
        assert_eq!(
            size(&mut scaling, &sized_jpeg(GRAY, (2101, 2050), false)),
            (263, 257)
        );
        assert_eq!(size(&mut scaling, &gradient_jpeg(RGB)), (64, 48));
        assert_eq!(
            size(&mut scaling, &sized_jpeg(CMYK, (1030, 517), false)),
            (1030, 517)
        );
        assert_eq!(
            size(&mut scaling, &sized_jpeg(RGB, (1030, 517), true)),
            (1030, 517)
        );
    }

    /// The denominator follows the model's resize size: a 730x900 JPEG keeps a shorter side
    /// of ceil(730 / 4) = 183 >= 180 at 1/4, but needs 1/2 (365) for 256.
    #[test]
    fn dct_scaling_keeps_the_models_resize_size() {
        let jpeg = sized_jpeg(turbojpeg::PixelFormat::RGB, (730, 900), false);
        let small = Geometry {
            resize: 180,
            crop: 160,
        };
        for (geometry, size) in [(DEMO, (365, 450)), (small, (183, 225))] {
            let image = JpegDecoder::new(Some(geometry))
                .unwrap()
                .decode(&jpeg, &LIMITS)
                .unwrap();
            assert_eq!((image.width, image.height), size, "{geometry:?}");
        }
    }

    #[test]
    fn recoverable_warnings_decode_and_truncation_is_refused() {
        let whole = gradient_jpeg(turbojpeg::PixelFormat::RGB);
        let clean = decode(&whole).unwrap();
        assert_eq!(
            (clean.width, clean.height, clean.data.len()),
            (64, 48, 64 * 48 * 3)
        );
        // Stray bytes before the end marker: libjpeg warns and decodes the image whole.
        let mut stray = whole[..whole.len() - 2].to_vec();
        stray.extend([0x00, 0x13, 0x37, 0xFF, 0xD9]);
        assert_eq!(decode(&stray).unwrap(), clean);
        // Cut short, or only the end marker missing: Pillow refuses both as truncated.
        for cut in [whole.len() / 2, whole.len() - 2] {
            let error = decode(&whole[..cut]).unwrap_err();
            assert_eq!(error.error_type, ErrorType::UnsupportedImage, "cut at {cut}");
            assert!(error.message.contains("truncated"), "{}", error.message);
        }
        // Both at once: the first warning is the stray bytes, the marker walk still sees the cut.
        let scan = whole.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mut both = whole[..scan].to_vec();
        both.extend([0x00, 0x13, 0x37]);
        both.extend(&whole[scan..whole.len() * 2 / 3]);
        assert_eq!(decode(&both).unwrap_err().error_type, ErrorType::UnsupportedImage);
    }

    #[test]
    fn cmyk_jpeg_is_decoded_to_rgb() {
        let image = decode(&gradient_jpeg(turbojpeg::PixelFormat::CMYK)).unwrap();
        assert_eq!(
            (image.width, image.height, image.data.len()),
            (64, 48, 64 * 48 * 3)
        );
    }

    #[test]
    fn cmyk_conversion_is_pillows() {
        // Stored (inverted) CMYK: 255 everywhere is white; stored k = 0 is black.
        let mut pixels = vec![255, 255, 255, 255, 0, 0, 0, 0, 155, 55, 255, 200];
        adobe_cmyk_to_rgb(&mut pixels);
        // Pillow: c = 100, m = 200, y = 0, k = 55 -> nk = 200: 200 - 100*200/255 (78.4 -> 78)...
        assert_eq!(pixels, [255, 255, 255, 0, 0, 0, 122, 43, 200]);
    }
}
