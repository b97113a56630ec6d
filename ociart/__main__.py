from ociart.cli import main

main()
