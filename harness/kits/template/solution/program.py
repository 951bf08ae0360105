"""The reference solution: the closed form of the sum of squares. Usage: python3 program.py N"""

import sys

M = 1_000_003


def main(n):
    print((n - 1) * n * (2 * n - 1) // 6 % M)


if __name__ == "__main__":
    main(int(sys.argv[1]))
