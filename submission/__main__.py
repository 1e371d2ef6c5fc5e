import sys

from submission.shadowing import shadowed

if message := shadowed():
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

from submission.cli import main  # noqa: E402  (after the check: a shadowing package would be imported here)

sys.exit(main())
