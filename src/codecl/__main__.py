"""`python -m codecl` entry point."""
from codecl.cli import main

if __name__ == "__main__":
    main()
