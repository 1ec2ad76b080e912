//! TEMPORARY stand-in.
#![allow(missing_docs, dead_code)]
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct LabelSelector;
impl LabelSelector {
    pub fn parse(_s: &str) -> Result<Self, super::StoreError> {
        Ok(Self)
    }
    pub fn matches(&self, _labels: &BTreeMap<String, String>) -> bool {
        true
    }
}
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSelector;
impl FieldSelector {
    pub fn parse(_s: &str) -> Result<Self, super::StoreError> {
        Ok(Self)
    }
    pub fn matches(&self, _namespace: &str, _name: &str) -> bool {
        true
    }
}
