"""Views of the model: graphviz diagrams, ipywidgets, plots.

This package may import graphviz, ipywidgets, IPython and matplotlib (the ``viz`` extra). It reads the model's
traces and state; the model (``nbmodel`` outside ``nbmodel.viz``) never imports it.
"""

from nbmodel.viz.dot import Diagram, Digraph, Graph, diagram, ensure_dot, svg

__all__ = ["Diagram", "Digraph", "Graph", "diagram", "ensure_dot", "svg"]
