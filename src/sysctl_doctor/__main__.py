from sysctl_doctor.cli import main

main()
