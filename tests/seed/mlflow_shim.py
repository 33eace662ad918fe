"""What the seed's `import mlflow` becomes: aliases of tracewatch's names, and only those the
runnable examples use. No behaviour of its own."""

from types import SimpleNamespace

import scorers

genai = SimpleNamespace(evaluate=scorers.evaluate)
