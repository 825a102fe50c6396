"""The graph IR, its op definitions and the reference interpreter."""
from .graph import Graph, Node, Value
from .interpreter import run
from .ops import OPS, get_op

__all__ = ["Graph", "Node", "Value", "run", "OPS", "get_op"]
