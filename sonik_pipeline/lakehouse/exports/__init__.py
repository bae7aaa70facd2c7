"""Datasets taken out of the lakehouse: training sets that can be made again, byte for byte."""
