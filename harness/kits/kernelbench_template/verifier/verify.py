"""{{NAME}}: {{TITLE}}. The kernel kit's nn.Module verifier (kernelbench_kit) does the checking."""

import os

import kernelbench_kit

if __name__ == "__main__":
    kernelbench_kit.main(os.path.dirname(os.path.abspath(__file__)))
