from rayline.cli import main

main()
