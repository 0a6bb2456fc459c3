//! The checked values of commands: the crate's shared values ([`crate::values`]) and the
//! overlay values of the compositor's requests.

pub use crate::media::compositor::request::{
    Colour, FadeTime, FontSize, Layer, Offset, OffsetXY, Opacity, OverlayRequest, OverlayText, OverlayType, Scale,
};
pub use crate::values::*;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn colours_with_non_ascii_letters_are_refused_not_sliced() {
        assert!("#aébbb".parse::<Colour>().is_err());
        assert!("#ééé".parse::<Colour>().is_err());
        assert_eq!("#ff000080".parse::<Colour>().unwrap(), Colour([255, 0, 0, 128]));
        assert_eq!("00ff00".parse::<Colour>().unwrap(), Colour([0, 255, 0, 255]));
        assert!("#12345".parse::<Colour>().is_err());
    }

    #[test]
    fn program_times_are_finite_and_bounded() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let e = ProgramTime::from_secs(bad).unwrap_err();
            assert!(e.0.contains("from 0 to"), "{e}");
        }
        assert_eq!(ProgramTime::from_secs(1.5).unwrap().us(), 1_500_000);
        assert!(serde_json::from_str::<ProgramTime>("1e300").is_err());
    }

    #[test]
    fn one_fps_rule() {
        assert!(Fps::new(30).is_ok());
        for f in [0, 7, 29, 61, 1000] {
            assert!(Fps::new(f).unwrap_err().0.contains("use one of"), "{f}");
        }
    }

    #[test]
    fn offsets_take_pixels_or_percent() {
        assert_eq!(serde_json::from_str::<Offset>("12").unwrap().0, crate::media::compositor::Offset::Px(12));
        assert_eq!(
            serde_json::from_str::<Offset>("\"-5%\"").unwrap().0,
            crate::media::compositor::Offset::Percent(-5.0)
        );
        assert!(serde_json::from_str::<Offset>("1.5").is_err());
        assert!(serde_json::from_str::<Offset>("\"500%\"").is_err());
        assert!(serde_json::from_str::<Offset>("1e30").is_err());
    }

    proptest! {
        #[test]
        fn no_string_panics_any_parser(s in "\\PC{0,12}") {
            let _ = s.parse::<Colour>();
            let _ = s.parse::<Offset>();
            let _ = s.parse::<Size>();
            let _ = s.parse::<ProgramTime>();
            let _ = s.parse::<Opacity>();
            let _ = CameraId::new(s.clone());
            let _ = OverlayText::new(s);
        }

        #[test]
        fn every_accepted_number_is_in_range(v in proptest::num::f64::ANY) {
            if let Ok(o) = Opacity::new(v) { prop_assert!((0.0..=1.0).contains(&o.get())); }
            if let Ok(t) = ProgramTime::from_secs(v) { prop_assert!(t.us() >= 0 && t.secs() <= ProgramTime::MAX_S); }
            if let Ok(s) = Scale::new(v) { prop_assert!(s.get() > 0.0); }
        }
    }
}
