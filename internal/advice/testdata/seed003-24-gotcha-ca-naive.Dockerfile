# ❌ Bad: HTTPS calls will fail
FROM scratch
COPY myapp /myapp
CMD ["/myapp"]
