//! Tests of the page's assembly.

use super::PAGE;

#[test]
fn the_page_inlines_uplot_with_its_licence_and_loads_nothing_from_elsewhere() {
    assert!(!PAGE.contains("/*UPLOT_"), "a placeholder was left");
    assert!(PAGE.contains("var uPlot=function()"));
    assert!(PAGE.contains("Copyright (c) 2022 Leon Sorokin"));
    assert!(PAGE.contains("Permission is hereby granted"));
    assert!(PAGE.contains(".uplot"));
    assert!(!PAGE.contains("<link"), "no linked stylesheet");
    assert!(!PAGE.contains(" src="), "no script from elsewhere");
    assert!(!PAGE.contains("url("), "no font or image from elsewhere");
}
