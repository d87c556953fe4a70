"""Offline preference datasets (HH-RLHF loader), as datasets.Dataset in prompt/chosen/rejected columns."""
