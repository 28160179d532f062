"""The package layering the README's Layout table states: a module imports only from its own
package and the packages below it (utils at the bottom, training at the top)."""
import ast
import glob
import os

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["utils", "losses", "metrics", "retrieval", "applications", "datasets", "pipeline",
          "visualization", "callbacks", "training", "inference"]


def imported_packages(path):
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name.split(".")[0], node.lineno


def test_no_module_imports_from_a_package_above_it():
    upward = []
    for package in LAYERS:
        for path in glob.glob(os.path.join(REPOSITORY, package, "*.py")):
            for imported, line in imported_packages(path):
                if imported in LAYERS and LAYERS.index(imported) > LAYERS.index(package):
                    upward.append("{}:{} imports {}".format(
                        os.path.relpath(path, REPOSITORY), line, imported))
    assert not upward, "\n".join(upward)


def test_the_readme_lists_every_package_in_layer_order():
    readme = open(os.path.join(REPOSITORY, "README.md")).read()
    layout = readme[readme.index("## Layout"):]
    positions = [layout.index("`{}/`".format(package)) for package in reversed(LAYERS)]
    assert positions == sorted(positions), "the Layout table lists packages top-down"
