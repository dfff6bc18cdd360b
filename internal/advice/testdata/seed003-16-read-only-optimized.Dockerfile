FROM scratch
COPY myapp /myapp
USER 65534:65534
ENTRYPOINT ["/myapp"]
