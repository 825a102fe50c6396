"""The graph IR, its op definitions and the reference interpreter."""
from .graph import Graph, GraphMeta, Node, UniformActivation, Value
from .interpreter import run
from .ops import OPS, get_op

__all__ = ["Graph", "GraphMeta", "UniformActivation", "Node", "Value", "run", "OPS", "get_op"]
