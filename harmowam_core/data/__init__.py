"""Datasets in the LeRobotDataset v3.0 layout: writer, reader, torch datasets, gate labelling, summaries."""

from harmowam_core.data.format import DatasetSpec
from harmowam_core.data.reader import DatasetReader, FrameDataset, WindowDataset, split_episodes
from harmowam_core.data.writer import DatasetWriter

__all__ = ["DatasetSpec", "DatasetReader", "DatasetWriter", "FrameDataset", "WindowDataset", "split_episodes"]
