"""The baseline: slow and plainly correct. Usage: python3 program.py N"""

import sys

M = 1_000_003


def main(n):
    total = 0
    for i in range(n):
        total = (total + i * i) % M
    print(total)


if __name__ == "__main__":
    main(int(sys.argv[1]))
